"""The figures of docs/ngram.md: PTB through every estimator, and perplexity against order.

Counts PTB's training text once at order 7, then estimates every smoothing from the same
counts (an order-n model uses the first n orders), scores PTB's test set (with </s>) and
draws the perplexity-against-order plot (``--plot``, default bench-out/ngram_perplexity.png;
``--plot docs/ngram_perplexity.png`` replaces the figure of docs/ngram.md). Jelinek-Mercer fits its
weights on PTB's validation set. Prints JSON; the last line is one JSON object.

    LMLAB_DATA=../shared/data python bench/ngram_tutorial.py [--plot PNG] [SMOOTHING ...]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmlab.core import DataError  # noqa: E402
from lmlab.data import open_corpus  # noqa: E402
from lmlab.ngram import SMOOTHINGS, NgramCounts, NgramLM, corpus_counts, fit_jm_lambdas  # noqa: E402
from lmlab.ngram.model import pad_rows  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402

TABLE_ORDERS = (3, 5)
PLOT_ORDERS = range(1, 8)
PLOTTED = ("add-k", "katz", "wb", "abs", "kn", "mkn")


def first_orders(counts: NgramCounts, n: int) -> NgramCounts:
    return NgramCounts(counts.vocab_size, counts.keys[:n], counts.counts[:n], counts.suffix[:n],
                       counts.bos_id, counts.eos_id, counts.unk_id, counts.pad_id)


def test_perplexity(lm: NgramLM, ids: np.ndarray, mask: np.ndarray) -> float:
    scores = lm.score_array(ids)[mask]
    return math.exp(-float(scores.sum()) / int(mask.sum()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("smoothings", nargs="*", default=list(SMOOTHINGS), help="estimators of the table (default all)")
    parser.add_argument("--plot", default="bench-out/ngram_perplexity.png", help="where to draw the plot")
    args = parser.parse_args()
    train, valid, test = open_corpus("ptb:train"), open_corpus("ptb:valid"), open_corpus("ptb:test")
    tok = WordLevelTokenizer("word").train(train)
    start = time.perf_counter()
    counts = corpus_counts(train, tok, max(PLOT_ORDERS))
    count_seconds = time.perf_counter() - start
    rows = [[tok.bos_id] + tok.encode(s) + [tok.eos_id] for s in test]
    ids, mask = pad_rows(rows, tok.eos_id)

    lambdas = {n: fit_jm_lambdas(train, tok, n, valid) for n in TABLE_ORDERS}
    table: dict = {}
    for smoothing in args.smoothings:
        for n in TABLE_ORDERS:
            options = {"lambdas": lambdas[n]} if smoothing == "jm" else {}
            start = time.perf_counter()
            lm = NgramLM.fit_counts(first_orders(counts, n), smoothing, **options)
            fit_seconds = time.perf_counter() - start
            table.setdefault(smoothing, {})[f"order{n}"] = {
                "perplexity": test_perplexity(lm, ids, mask), "normalized": lm.normalized,
                "estimate_seconds": round(fit_seconds, 3)}
        print(json.dumps({smoothing: table[smoothing]}), flush=True)
    curves: dict = {}
    for s in PLOTTED:
        for n in PLOT_ORDERS:
            try:
                value = test_perplexity(NgramLM.fit_counts(first_orders(counts, n), s), ids, mask)
            except DataError:  # e.g. modified KN's discounts cannot be estimated from raw unigram counts
                value = None
            curves.setdefault(s, []).append(value)
    plot(curves, args.plot)
    table = {k: {o: {**v, "perplexity": v["perplexity"] if math.isfinite(v["perplexity"]) else "inf"}
                 for o, v in rows.items()} for k, rows in table.items()}
    print(json.dumps({"count_seconds_order7": count_seconds, "jm_lambdas": lambdas, "table": table,
                      "curves": curves, "orders": list(PLOT_ORDERS)}))
    return 0


def plot(curves: dict[str, list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmlab.core.io import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, values in curves.items():
        ax.plot(list(PLOT_ORDERS), [math.nan if v is None else v for v in values], marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("order N")
    ax.set_ylabel("PTB test perplexity (log scale)")
    ax.set_title("Count-based n-gram models on PTB (lmlab)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


if __name__ == "__main__":
    raise SystemExit(main())
