"""lmlab.embeddings: sentence embeddings from bidirectional encoders (``embed``, ``SentenceEncoder``)."""

from .sentence import SentenceEncoder, embed, sentence_encoder

__all__ = ["SentenceEncoder", "embed", "sentence_encoder"]
