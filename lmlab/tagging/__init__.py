"""Sequence labelling: BiLSTM and encoder taggers with a softmax or a linear-chain CRF (BIO
constraints), CoNLL-style entity scores equal to seqeval's, token accuracy."""

from .bio import bio_constraints, check_bio_sequences, is_bio_tag_set
from .metrics import entities, entity_scores, token_accuracy
from .tagger import KINDS, Tagger

__all__ = ["KINDS", "Tagger", "bio_constraints", "check_bio_sequences", "entities", "entity_scores",
           "is_bio_tag_set", "token_accuracy"]
