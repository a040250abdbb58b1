"""Parallel text for encoder–decoders: line-aligned source/target corpora, and padded pair batches.

``both_directions`` turns one pair of languages into a multilingual corpus (Johnson et al., 2017):
every pair in both directions, each source led by the target language's tag (``<2en>``), so one
model translates either way. ``parallel_corpora`` opens two line-aligned files (blank lines kept, so line i of one is line i
of the other) from explicit paths, or from one prefix and a language pair: ``multi30k:train`` with
``de-en`` is the registered splits ``train.de`` → ``train.en``; a path prefix ``data/train`` with
``de-en`` is ``data/train.de`` → ``data/train.en`` (fairseq's layout). ``PairBatches`` turns
tokenised pairs into length-bucketed, right-padded batches that are a pure function of the step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, InputError
from ..core.validate import check_number
from .corpus import Corpus, from_texts, text_file
from .loaders import pad_batch, rank_rows


def split_pair(pair: str) -> tuple[str, str]:
    """``"de-en"`` → (``"de"``, ``"en"``): the source and the target language suffixes."""
    src, sep, tgt = str(pair).partition("-")
    if not sep or not src or not tgt or "-" in tgt:
        raise ConfigError(f"language pair {pair!r} is not SRC-TGT", "write it like de-en")
    return src, tgt


def aligned_text(spec: str | os.PathLike) -> Corpus:
    """One side of a parallel corpus, every line kept: a path, or ``NAME:SPLIT`` of a data set."""
    from .datasets import dataset_file

    text = os.fspath(spec)
    if not Path(text).exists() and ":" in text and "/" not in text:
        name, _, split = text.partition(":")
        return text_file(dataset_file(name, split), keep_blank=True)
    if not Path(text).is_file():
        raise InputError(f"parallel text file not found: {text}",
                         "pass a file of one sentence per line (or NAME:SPLIT of a data set)")
    return text_file(text, keep_blank=True)


def parallel_corpora(source: str | os.PathLike, target: str | os.PathLike | None = None, *,
                     pair: str | None = None) -> tuple[Corpus, Corpus]:
    """(source corpus, target corpus): two explicit files, or a prefix ``source`` and ``pair``."""
    if target is None:
        if pair is None:
            raise ConfigError("a parallel corpus needs a target side",
                              "pass --pair SRC-TGT with a prefix (multi30k:train), or --source and --target files")
        src, tgt = split_pair(pair)
        return aligned_text(f"{source}.{src}"), aligned_text(f"{source}.{tgt}")
    return aligned_text(source), aligned_text(target)


def aligned_lines(corpora: tuple[Corpus, Corpus]) -> tuple[list[str], list[str]]:
    """Both sides of a parallel corpus as lists of lines, refused when their line counts differ."""
    sources, targets = (list(side) for side in corpora)
    if len(sources) != len(targets):
        raise DataError(f"the parallel files are not aligned: {corpora[0].name} has {len(sources)} lines, "
                        f"{corpora[1].name} has {len(targets)}",
                        "pass line-aligned files: line i of one must translate line i of the other")
    return sources, targets


def language_tag(language: str) -> str:
    """The token that asks a multilingual model for ``language``: ``<2en>`` (a special token of its tokenizer)."""
    return f"<2{language}>"


def both_directions(corpora: tuple[Corpus, Corpus], pair: str) -> tuple[Corpus, Corpus]:
    """(sources, targets) with every pair of ``corpora`` (languages ``pair``, e.g. de-en) twice: forwards
    with ``<2en>`` before the source, and backwards with ``<2de>`` before the target-side text."""
    src_lang, tgt_lang = split_pair(pair)
    sources, targets = aligned_lines(corpora)
    forward = [f"{language_tag(tgt_lang)} {s}" for s in sources]
    backward = [f"{language_tag(src_lang)} {t}" for t in targets]
    name = f"{corpora[0].name}+{corpora[1].name}"
    return from_texts(forward + backward, f"{name}:sources"), from_texts(targets + sources, f"{name}:targets")


class PairBatches:
    """Batches of ``batch_size`` (source, target) id rows: each pass over the pairs is shuffled by
    (seed, pass), sorted by length within pools of ``batch_size × pool_factor`` rows so padding is
    small, and the batches shuffled again. Step ``s`` always gives the same batch."""

    def __init__(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int, pad_id: int, *,
                 seed: int = 0, pool_factor: int = 50) -> None:
        check_number("batch_size", batch_size, low=1, integer=True)
        if not pairs:
            raise DataError("no sentence pairs to train on", "check the parallel files are not empty")
        self.pairs, self.batch_size, self.pad_id, self.seed = list(pairs), batch_size, pad_id, seed
        self.pool = batch_size * pool_factor
        self.per_pass = -(-len(self.pairs) // batch_size)
        self._plan: tuple[int, list[np.ndarray]] | None = None

    def _pass_plan(self, index: int) -> list[np.ndarray]:
        if self._plan is None or self._plan[0] != index:
            order = np.random.default_rng([self.seed, index]).permutation(len(self.pairs))
            lengths = np.array([len(s) + len(t) for s, t in self.pairs])
            batches = []
            for i in range(0, len(order), self.pool):
                chunk = order[i:i + self.pool]
                chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
                batches += [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
            shuffle = np.random.default_rng([self.seed, index, 1]).permutation(len(batches))
            self._plan = (index, [batches[j] for j in shuffle])
        return self._plan[1]

    def batch(self, step: int, rank: int = 0, world: int = 1) -> dict:
        rows = self._pass_plan(step // self.per_pass)[step % self.per_pass]
        return self._padded([self.pairs[rows[r]] for r in rank_rows(self.batch_size, rank, world) if r < len(rows)])

    def _padded(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict:
        (src, src_mask), (tgt, tgt_mask) = (pad_batch([p[side] for p in pairs], self.pad_id) for side in (0, 1))
        return {"source": src, "source_mask": src_mask.long(), "target": tgt, "target_mask": tgt_mask.long()}

    def __len__(self) -> int:
        return self.per_pass

    def all_batches(self) -> list[dict]:
        """One pass over every pair in file order (for validation)."""
        return [self._padded(self.pairs[i:i + self.batch_size]) for i in range(0, len(self.pairs), self.batch_size)]


def as_tensors(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
    """Pairs as flat id tensors with offsets (to save tokenised pairs in a safetensors file)."""
    out = {}
    for side, name in ((0, "source"), (1, "target")):
        lengths = torch.tensor([len(p[side]) for p in pairs], dtype=torch.long)
        out[f"{name}_ids"] = torch.tensor([i for p in pairs for i in p[side]], dtype=torch.long)
        out[f"{name}_offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return out


def from_tensors(tensors: dict[str, torch.Tensor]) -> list[tuple[list[int], list[int]]]:
    """The inverse of ``as_tensors``."""
    sides = []
    for name in ("source", "target"):
        ids, offsets = tensors[f"{name}_ids"].tolist(), tensors[f"{name}_offsets"].tolist()
        sides.append([ids[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
    return list(zip(*sides, strict=True))
