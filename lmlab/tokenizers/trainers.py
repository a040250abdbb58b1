"""Train a subword tokenizer from text: pick the pipeline, count the words, learn the model.

``train_tokenizer(kind, texts, vocab_size)`` with kind one of ``KINDS``:

- ``bpe``: character BPE, SentencePiece-style (spaces become ``▁`` at the start of pieces), ``<unk>``
  for characters never seen;
- ``bpe-eow``: character BPE on whitespace-split words with an end-of-word marker ``</w>``;
- ``byte-bpe``: GPT-2 byte-level BPE (256-byte alphabet, never an unknown);
- ``wordpiece``: BERT's pipeline (lowercase, punctuation split), ``##`` continuations; merges by
  likelihood, or by count as HF ``tokenizers`` (``wordpiece_score="count"``);
- ``unigram``: SentencePiece's Unigram LM over NFKC-normalized ``▁`` pieces.

The result is reproducible: the same texts and settings give the same file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ..core.errors import ConfigError
from ..core.progress import progress
from ..core.validate import check_choice, check_number
from .bpe_trainer import WORDPIECE_SCORES, learn_bpe, learn_wordpiece
from .models import BPE, Unigram, WordPiece
from .normalizers import build_normalizer
from .pipeline import SubwordTokenizer, added_token
from .pre_tokenizers import BYTE_TO_CHAR, PreTokenizer, build_pre_tokenizer
from .unigram_trainer import learn_unigram
from .wordlevel import bos_eos_template

KINDS = ("bpe", "bpe-eow", "byte-bpe", "wordpiece", "unigram")

_METASPACE = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PIPELINES: dict[str, dict] = {
    "bpe": {"normalizer": None, "pre_tokenizer": _METASPACE, "decoder": _METASPACE,
            "specials": {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}},
    "bpe-eow": {"normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"},
                "decoder": {"type": "BPEDecoder", "suffix": "</w>"},
                "specials": {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}},
    "byte-bpe": {"normalizer": None, "pre_tokenizer": _BYTE_LEVEL, "decoder": _BYTE_LEVEL,
                 "specials": {"eos": "<|endoftext|>"}},
    "wordpiece": {"normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                                 "strip_accents": None, "lowercase": True},
                  "pre_tokenizer": {"type": "BertPreTokenizer"},
                  "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
                  "specials": {"pad": "[PAD]", "unk": "[UNK]", "bos": "[CLS]", "eos": "[SEP]", "mask": "[MASK]"}},
    "unigram": {"normalizer": {"type": "NFKC"}, "pre_tokenizer": _METASPACE, "decoder": _METASPACE,
                "specials": {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}},
}


def count_words(texts: Iterable[str], normalizer: dict | None, pre_tokenizer: dict | None) -> Counter[str]:
    """How often each pre-tokenized piece (in the model's alphabet) occurs in ``texts``."""
    normalize = build_normalizer(normalizer)
    pre = build_pre_tokenizer(pre_tokenizer) or PreTokenizer(lambda t: [(0, len(t))] if t else [])
    firsts: Counter[str] = Counter()  # a text's first piece may be transformed differently
    pieces_seen: Counter[str] = Counter()  # every piece, first ones included
    batch: list[str] = []  # counted a batch at a time: one C-level pass instead of one call per text
    for text in progress(texts, desc="counting words", unit="doc"):
        if normalize is not None:
            text = normalize(text)
        pieces = pre.pieces(text)
        if pieces:
            batch += pieces
            if pre.transform is not None:
                firsts[pieces[0]] += 1
            if len(batch) >= 1 << 16:
                pieces_seen.update(batch)
                batch.clear()
    pieces_seen.update(batch)
    if pre.transform is None:
        return pieces_seen
    pieces_seen.subtract(firsts)
    counts: Counter[str] = Counter()
    for table, first in ((firsts, True), (pieces_seen, False)):
        for piece, n in table.items():
            if n > 0:
                counts[pre.transform(piece, first)] += n
    return counts


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int, *, min_frequency: int = 0,
                    limit_alphabet: int | None = None, special_tokens: dict[str, str] | None = None,
                    add_bos_eos: bool = True, wordpiece_score: str = "likelihood") -> SubwordTokenizer:
    """Train a ``kind`` tokenizer (see ``KINDS``) with ``vocab_size`` ids, special tokens included.

    ``add_bos_eos`` (default on) writes a post-processor so that ``add_special_tokens=True``
    wraps sequences in the bos/eos roles (WordPiece: ``[CLS] … [SEP]``). ``wordpiece_score``:
    ``likelihood`` (WordPiece's own merge score) or ``count`` (HF ``tokenizers``' trainer).
    ``min_frequency`` applies to count-based merges (BPE kinds, count WordPiece).
    """
    check_choice("kind", kind, KINDS)
    check_choice("wordpiece_score", wordpiece_score, WORDPIECE_SCORES)
    if wordpiece_score != "likelihood" and kind != "wordpiece":
        raise ConfigError(f"wordpiece_score applies to kind 'wordpiece', not {kind!r}", "drop --wordpiece-score")
    if min_frequency and (kind == "unigram" or (kind == "wordpiece" and wordpiece_score == "likelihood")):
        raise ConfigError(f"min_frequency applies to count-based merges, not to {kind} "
                          f"{'(likelihood score)' if kind == 'wordpiece' else ''}".strip(),
                          "drop --min-frequency, or use a BPE kind or --wordpiece-score count")
    vocab_size = int(check_number("vocab_size", vocab_size, low=1, integer=True))
    check_number("min_frequency", min_frequency, low=0, integer=True)
    spec = PIPELINES[kind]
    roles = dict(spec["specials"] if special_tokens is None else special_tokens)
    specials = list(dict.fromkeys(roles.values()))
    if vocab_size <= len(specials):
        raise ConfigError(f"vocab_size {vocab_size} leaves no room after {len(specials)} special tokens",
                          "use a larger --vocab-size")
    counts = count_words(texts, spec["normalizer"], spec["pre_tokenizer"])
    if kind in ("bpe", "bpe-eow", "byte-bpe"):
        initial = [BYTE_TO_CHAR[b] for b in range(256)] if kind == "byte-bpe" else []
        suffix = "</w>" if kind == "bpe-eow" else ""
        vocab, merges = learn_bpe(counts, vocab_size, specials=specials, initial_alphabet=initial,
                                  limit_alphabet=limit_alphabet, min_frequency=min_frequency, suffix=suffix)
        model = BPE(vocab, merges, unk_token=roles.get("unk") if kind != "byte-bpe" else None,
                    end_of_word_suffix=suffix)
    elif kind == "wordpiece":
        vocab = learn_wordpiece(counts, vocab_size, specials=specials, limit_alphabet=limit_alphabet,
                                score=wordpiece_score, min_frequency=min_frequency)
        model = WordPiece(vocab, unk_token=roles.get("unk", "[UNK]"))
    else:
        pieces = learn_unigram(counts, vocab_size - len(specials))
        model = Unigram([(t, 0.0) for t in specials] + [p for p in pieces if p[0] not in specials],
                        unk_id=specials.index(roles["unk"]) if "unk" in roles else None)
    added = [added_token(t, model.ids[t]) for t in specials]
    post = bos_eos_template(roles.get("bos"), roles.get("eos"), model.ids) if add_bos_eos else None
    return SubwordTokenizer(model, normalizer=spec["normalizer"], pre_tokenizer=spec["pre_tokenizer"],
                            decoder=spec["decoder"], post_processor=post, added_tokens=added, special_tokens=roles)
