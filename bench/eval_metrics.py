"""Speed and agreement of lmlab's generation metrics and Porter stemmer against their peers.

BLEU and chrF/chrF++ against sacrebleu, ROUGE against rouge-score (both on Multi30k test
2016, the German source copied as a baseline translation), the Porter stemmer against
NLTK's on WikiText-2's vocabulary. Each figure is the median of three runs, caches
cleared; the last line printed is one JSON object with our/peer time ratios.
Run: LMLAB_DATA=../shared/data python bench/eval_metrics.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lmlab, not an installed one

from lmlab.analysis import porter
from lmlab.data import data_root
from lmlab.eval import bleu as bleu_mod
from lmlab.eval.bleu import corpus_bleu
from lmlab.eval.chrf import corpus_chrf
from lmlab.eval.rouge import rouge_scores


def timed(fn, repeats: int = 3, reset=None):
    times, value = [], None
    for _ in range(repeats):
        if reset:
            reset()
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, statistics.median(times)


def main() -> None:
    import sacrebleu
    from nltk.stem.porter import PorterStemmer
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF

    root = data_root() / "multi30k"
    hyps = (root / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    refs = (root / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    results: dict = {"segments": len(hyps), "sacrebleu": sacrebleu.__version__}

    def clear() -> None:
        bleu_mod.tokenize_13a.cache_clear()
        bleu_mod.tokenize_intl.cache_clear()

    for tok in ("13a", "intl"):
        ours, t_ours = timed(lambda tok=tok: corpus_bleu(hyps, [refs], tokenize=tok).score, reset=clear)
        peer, t_peer = timed(lambda tok=tok: BLEU(tokenize=tok).corpus_score(hyps, [refs]).score)
        results[f"bleu_{tok}"] = {"ours": ours, "peer": peer, "abs_diff": abs(ours - peer),
                                  "seconds_ours": t_ours, "seconds_peer": t_peer, "time_ratio": t_ours / t_peer}
    for order, name in ((0, "chrf"), (2, "chrf++")):
        ours, t_ours = timed(lambda order=order: corpus_chrf(hyps, [refs], word_order=order).score)
        peer, t_peer = timed(lambda order=order: CHRF(word_order=order).corpus_score(hyps, [refs]).score)
        results[name] = {"ours": ours, "peer": peer, "abs_diff": abs(ours - peer),
                         "seconds_ours": t_ours, "seconds_peer": t_peer, "time_ratio": t_ours / t_peer}
    for stem in (False, True):
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=stem)
        ours, t_ours = timed(lambda stem=stem: [rouge_scores(r, h, stem=stem)["rougeL"].fmeasure
                                                for r, h in zip(refs, hyps, strict=True)],
                             reset=porter._CACHE.clear)
        peer, t_peer = timed(lambda scorer=scorer: [scorer.score(r, h)["rougeL"].fmeasure
                                                    for r, h in zip(refs, hyps, strict=True)])
        diff = max(abs(a - b) for a, b in zip(ours, peer, strict=True))
        results[f"rouge{'_stem' if stem else ''}"] = {"max_abs_diff_rougeL": diff, "seconds_ours": t_ours,
                                                      "seconds_peer": t_peer, "time_ratio": t_ours / t_peer}
    words: set[str] = set()
    for split in ("train", "valid", "test"):
        with open(data_root() / "wikitext-2" / f"{split}.txt", encoding="utf-8") as fh:
            for line in fh:
                words.update(line.split())
    vocab = sorted(words)
    ours, t_ours = timed(lambda: [porter.stem(w) for w in vocab], reset=porter._CACHE.clear)
    nltk_stemmer = PorterStemmer()
    peer, t_peer = timed(lambda: [nltk_stemmer.stem(w) for w in vocab])
    results["porter"] = {"words": len(vocab), "mismatches": sum(a != b for a, b in zip(ours, peer, strict=True)),
                         "seconds_ours": t_ours, "seconds_peer": t_peer, "time_ratio": t_ours / t_peer}
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"{name:10s} ours {r['seconds_ours']:.3f}s  peer {r['seconds_peer']:.3f}s  "
                  f"ratio {r['time_ratio']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
