"""Word-align a tokenised parallel corpus end to end and save what was learned.

``align_corpus`` trains the chosen IBM model source→target and, when a symmetrisation is asked
for, target→source too, then combines the two Viterbi alignments sentence by sentence.
``save_alignment`` writes the output directory: ``translation_table.tsv`` (source word, target
word, t(target | source), most probable first; NULL is ``<NULL>``), ``alignment_table.tsv``
(Model 2: i, j, l, m, a(i | j, l, m)), ``alignments.txt`` (Pharaoh ``i-j`` source-target
points, one line per sentence pair) and ``info.json`` (settings and the EM log-likelihoods).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.io import atomic_write, write_json
from ..core.validate import check_choice, check_number
from .ibm import IBMModel, train_ibm1, train_ibm2
from .symmetrize import SYMMETRIZATIONS, symmetrize

MODELS = ("ibm1", "ibm2")
NULL_NAME = "<NULL>"


@dataclass
class CorpusAlignment:
    """The source→target model, the target→source one (when symmetrising), and the final points."""

    forward: IBMModel
    backward: IBMModel | None
    alignments: list[list[tuple[int, int]]]  # per sentence pair: (source index, target index)
    symmetrization: str | None


def directional_points(model: IBMModel, *, reverse: bool = False) -> list[list[tuple[int, int]]]:
    """A model's Viterbi links as (source index, target index) points (NULL links dropped);
    ``reverse`` for a model trained target→source, whose points are swapped back."""
    return [[(j, i) if reverse else (i, j) for j, i in sentence if i is not None] for sentence in model.viterbi()]


def align_corpus(pairs: Sequence[tuple[Sequence[str], Sequence[str]]], *, model: str = "ibm1",
                 iterations: int = 5, symmetrization: str | None = None,
                 normaliser: str = "position") -> CorpusAlignment:
    """Train ``model`` (ibm1 or ibm2) for ``iterations`` EM steps on (source words, target words) pairs
    and align them; ``symmetrization`` (one of ``SYMMETRIZATIONS``) also trains the reverse direction."""
    check_choice("model", model, MODELS)
    check_number("iterations", iterations, low=0, integer=True)
    if symmetrization is not None:
        check_choice("symmetrization", symmetrization, SYMMETRIZATIONS)
    fit = train_ibm1 if model == "ibm1" else train_ibm2
    forward = fit(pairs, iterations, normaliser=normaliser)
    points = directional_points(forward)
    if symmetrization is None:
        return CorpusAlignment(forward, None, points, None)
    backward = fit([(t, s) for s, t in pairs], iterations, normaliser=normaliser)
    combined = [symmetrize(f, b, len(s), len(t), symmetrization) for f, b, (s, t)
                in zip(points, directional_points(backward, reverse=True), pairs, strict=True)]
    return CorpusAlignment(forward, backward, combined, symmetrization)


def save_alignment(out: str | os.PathLike, result: CorpusAlignment, *, min_prob: float = 0.0,
                   info: dict | None = None) -> dict:
    """Write the output directory (see the module docstring); table entries below ``min_prob`` are
    left out. Returns what was written (counts and file names)."""
    check_number("min_prob", min_prob, low=0.0, high=1.0)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    written = {"translation_entries": 0}
    table = result.forward.translation_table()
    with atomic_write(root / "translation_table.tsv") as fh:
        fh.write("source\ttarget\tprobability\n")
        for source in sorted(table, key=lambda w: (w is not None, w or "")):
            for target, p in sorted(table[source].items(), key=lambda kv: (-kv[1], kv[0])):
                if p >= min_prob:
                    fh.write(f"{NULL_NAME if source is None else source}\t{target}\t{p:.9g}\n")
                    written["translation_entries"] += 1
    if result.forward.version == 2:
        with atomic_write(root / "alignment_table.tsv") as fh:
            fh.write("i\tj\tl\tm\tprobability\n")
            for key, p in sorted(result.forward.alignment_table().items(), key=lambda kv: kv[0][::-1]):
                fh.write("\t".join(map(str, key)) + f"\t{p:.9g}\n")
        written["alignment_table"] = "alignment_table.tsv"
    with atomic_write(root / "alignments.txt") as fh:
        for points in result.alignments:
            fh.write(" ".join(f"{i}-{j}" for i, j in points) + "\n")
    summary = {"model": f"ibm{result.forward.version}", "symmetrization": result.symmetrization,
               "normaliser": result.forward.normaliser, "sentence_pairs": len(result.alignments),
               "source_vocabulary": len(result.forward.links.source_vocab) - 1,
               "target_vocabulary": len(result.forward.links.target_vocab),
               "log_likelihood": result.forward.log_likelihood, "min_prob": min_prob, **written, **(info or {})}
    if result.backward is not None:
        summary["backward_log_likelihood"] = result.backward.log_likelihood
    write_json(root / "info.json", summary)
    return summary
