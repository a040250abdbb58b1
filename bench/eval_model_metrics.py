"""BERTScore and MAUVE with lmlab's MiniLM encoder on real data, against ``bert-score`` and ``mauve-text``.

BERTScore: Multi30k test 2016, the German source copied as the "translation" (the copy
baseline) against the English references, and the references against themselves; lmlab
(``all-MiniLM-L6-v2`` through ``lmlab.embeddings``, last layer) against the ``bert-score``
library given the same model as a local directory (``num_layers=6``), without and with idf.
MAUVE: WikiText-2 test paragraphs (first 64 words each, shuffled with a seed) split into two
halves: one half against the other (same distribution) and against samples of a unigram
model trained on WikiText-2 train (same length). Features are lmlab's MiniLM sentence
vectors for both systems, so ``mauve-text`` (faiss k-means) and lmlab differ only in the
quantisation; the frontier and area are also compared on the very same histograms.
The last line is one JSON object.
Run: LMLAB_DATA=../shared/data nice -n 10 python bench/eval_model_metrics.py [--threads 2] [--mauve-texts 150]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

# this checkout's lmlab, not an installed one; and not bench/ itself, whose tokenizers.py would shadow the peer's
sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmlab.data import data_root  # noqa: E402
from lmlab.eval.bertscore import bert_score  # noqa: E402
from lmlab.eval.encoders import ENCODERS  # noqa: E402
from lmlab.eval.mauve import mauve_from_histograms, quantize  # noqa: E402
from lmlab.generate.sampling import ancestral_sample  # noqa: E402
from lmlab.models.encoder import minilm_dir  # noqa: E402
from lmlab.ngram import UnigramLM  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402

WORDS = 64


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def bertscore_figures(encoder, hyps: list[str], refs: list[str]) -> dict:
    out: dict = {}
    try:
        import bert_score as peer_lib
    except ImportError:
        peer_lib = None
    for idf in (False, True):
        ours, t_ours = timed(lambda idf=idf: bert_score(hyps, refs, encoder.tokens, idf=idf))
        row = {"ours": {k: ours[k] for k in ("precision", "recall", "f1")}, "seconds_ours": t_ours}
        if peer_lib is not None:
            (p, r, f), t_peer = timed(lambda idf=idf: peer_lib.score(hyps, refs, model_type=str(minilm_dir()),
                                                                     num_layers=6, idf=idf, batch_size=64))
            ours_f1 = np.array([x["f1"] for x in ours["per_pair"]])
            row.update(peer={"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean())},
                       seconds_peer=t_peer, time_ratio=t_ours / t_peer,
                       f1_abs_diff=abs(float(f.mean()) - ours["f1"]),
                       max_pair_f1_abs_diff=float(np.abs(ours_f1 - f.numpy()).max()),
                       version=peer_lib.__version__)
        out["idf" if idf else "plain"] = row
    if peer_lib is None:
        out["peer"] = "bert-score is not installed (pip install bert-score)"
    return out


def wikitext_paragraphs(count: int, seed: int) -> list[str]:
    lines = (data_root() / "wikitext-2" / "test.txt").read_text(encoding="utf-8").splitlines()
    paragraphs = [" ".join(line.split()[:WORDS]) for line in lines
                  if len(line.split()) >= WORDS and not line.strip().startswith("=")]
    random.Random(seed).shuffle(paragraphs)
    return paragraphs[:count]


def unigram_samples(count: int, seed: int) -> list[str]:
    train = (data_root() / "wikitext-2" / "train.txt").read_text(encoding="utf-8").splitlines()
    tok = WordLevelTokenizer("word").train(train)
    lm = UnigramLM.fit_corpus(train, tok)
    gens = ancestral_sample(lm, [tok.bos_id], max_new_tokens=WORDS, num_samples=count, seed=seed, stop_ids=[])
    return [tok.decode(g.ids, skip_special_tokens=True) for g in gens]


def mauve_figures(encoder, n: int, seed: int) -> dict:
    try:
        import mauve as peer_lib
        from mauve.compute_mauve import cluster_feats, get_divergence_curve_for_multinomials
        from sklearn.metrics import auc
    except ImportError:
        peer_lib = None
    paragraphs = wikitext_paragraphs(2 * n, seed)
    human, other = paragraphs[:n], paragraphs[n:]
    samples = unigram_samples(n, seed)
    (human_f, other_f, sample_f), t_embed = timed(lambda: [encoder.sentences(t) for t in (human, other, samples)])
    out: dict = {"texts_per_side": n, "words_per_text": WORDS, "embedding_seconds": t_embed}
    for name, q_feat in (("wikitext_halves", other_f), ("unigram_samples", sample_f)):
        (p, q), t_ours = timed(lambda q_feat=q_feat: quantize(human_f, q_feat, seed=25))
        ours = mauve_from_histograms(p, q)
        row = {"ours": ours, "clusters": len(p), "seconds_ours": t_ours}
        if peer_lib is not None:
            res, t_peer = timed(lambda q_feat=q_feat: peer_lib.compute_mauve(
                p_features=human_f, q_features=q_feat, seed=25, verbose=False))
            # the frontier and its area on the peer's own histograms: only the arithmetic differs
            pp, pq, _, _ = cluster_feats(human_f, q_feat, num_clusters=len(p), norm="l2", whiten=False, seed=25)
            curve = get_divergence_curve_for_multinomials(pp, pq, np.linspace(1e-6, 1 - 1e-6, 25), 5)
            same_hist_peer = auc(np.concatenate([curve[:, 0], [0]]), np.concatenate([curve[:, 1], [0]]))
            row.update(peer=float(res.mauve), seconds_peer=t_peer, time_ratio=t_ours / t_peer,
                       abs_diff=abs(ours - float(res.mauve)),
                       same_histograms_abs_diff=abs(mauve_from_histograms(pp, pq) - same_hist_peer),
                       version=getattr(peer_lib, "__version__", "0.4"))
        out[name] = row
    if peer_lib is None:
        out["peer"] = "mauve-text is not installed (pip install mauve-text)"
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mauve-texts", type=int, default=150, help="texts on each side of MAUVE")
    parser.add_argument("--segments", type=int, default=None, help="first N Multi30k segments (default all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = ENCODERS.get("minilm")()
    root = data_root() / "multi30k"
    src = (root / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:args.segments]
    refs = (root / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:args.segments]
    result = {"encoder": "minilm (all-MiniLM-L6-v2, last layer)", "threads": args.threads, "segments": len(refs),
              "bertscore_copy_baseline": bertscore_figures(encoder, src, refs)}
    print("bertscore copy baseline:", json.dumps(result["bertscore_copy_baseline"]), flush=True)
    ours, _ = timed(lambda: bert_score(refs, refs, encoder.tokens))
    result["bertscore_refs_vs_refs_f1"] = ours["f1"]
    result["mauve"] = mauve_figures(encoder, args.mauve_texts, args.seed)
    print("mauve:", json.dumps(result["mauve"]), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
