"""IBM Models 1 and 2 on Multi30k de→en: lmlab's vectorised EM against NLTK's ``IBMModel1`` /
``IBMModel2`` on the same pairs and iterations — time (interleaved rounds, ratio in the same run),
the largest difference between the two translation (and alignment) tables, and how often the
Viterbi alignments agree — then lmlab alone on the whole training set, with the symmetrised
alignments' sizes.

Run: LMLAB_DATA=../shared/data nice -n 10 python bench/wordalign.py [--pairs 2000 --iterations 5]
(the last line is one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

from lmlab.analysis.tokenize import word_tokens  # noqa: E402
from lmlab.core.progress import set_quiet  # noqa: E402
from lmlab.data.parallel import aligned_lines, parallel_corpora  # noqa: E402
from lmlab.wordalign import symmetrize, train_ibm1, train_ibm2  # noqa: E402
from lmlab.wordalign.corpus import align_corpus, directional_points  # noqa: E402

WORDS = r"\w+|[^\w\s]"


def compare(ours, theirs, bitext) -> dict:
    table = ours.translation_table()
    diff = max(abs(p - theirs.translation_table[t][s]) for s, row in table.items() for t, p in row.items())
    out = {"translation_entries": sum(len(r) for r in table.values()), "max_abs_diff_t": diff}
    if ours.version == 2:
        out["max_abs_diff_a"] = max(abs(p - theirs.alignment_table[i][j][l][m])
                                    for (i, j, l, m), p in ours.alignment_table().items())  # noqa: E741
    same = sum(sorted(a) == sorted(b.alignment) for a, b in zip(ours.viterbi(), bitext, strict=True))
    out["viterbi_identical_sentences"] = f"{same}/{len(bitext)}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000, help="pairs for the comparison with NLTK")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    args = parser.parse_args()
    set_quiet(True)
    from nltk.translate import AlignedSent, IBMModel1, IBMModel2

    de, en = aligned_lines(parallel_corpora("multi30k:train", pair="de-en"))
    pairs = [(word_tokens(d, WORDS), word_tokens(e, WORDS)) for d, e in zip(de, en, strict=True)]
    sample = pairs[:args.pairs]
    results: dict = {"data": f"Multi30k train de→en, first {len(sample)} pairs, lower-cased words and marks",
                     "iterations": args.iterations, "load_before": [round(x, 2) for x in os.getloadavg()]}
    for name, ours_fit, theirs_fit in (("ibm1", train_ibm1, IBMModel1), ("ibm2", train_ibm2, IBMModel2)):
        ours_s, theirs_s = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            ours = ours_fit(sample, args.iterations, normaliser="word")
            ours_s.append(time.perf_counter() - t0)
            bitext = [AlignedSent(list(t), list(s)) for s, t in sample]
            t0 = time.perf_counter()
            theirs = theirs_fit(bitext, args.iterations)
            theirs_s.append(time.perf_counter() - t0)
        results[name] = {"lmlab_seconds": round(min(ours_s), 3), "nltk_seconds": round(min(theirs_s), 3),
                         "speedup_vs_nltk": round(min(theirs_s) / min(ours_s), 1), **compare(ours, theirs, bitext)}
    t0 = time.perf_counter()
    full = align_corpus(pairs, model="ibm2", iterations=args.iterations, symmetrization="grow-diag-final")
    forward, backward = directional_points(full.forward), directional_points(full.backward, reverse=True)
    results["full_train_ibm2_symmetrised"] = {
        "pairs": len(pairs), "seconds_both_directions": round(time.perf_counter() - t0, 1),
        "log_likelihood_first_last": [round(full.forward.log_likelihood[0], 1), round(full.forward.log_likelihood[-1], 1)],
        "points": {method: sum(len(symmetrize(f, b, len(s), len(t), method)) for f, b, (s, t) in zip(
            forward, backward, pairs, strict=True)) for method in ("intersection", "grow-diag-final", "union")}}
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
