"""Benchmark: lmlab word2vec against gensim, same hyper-parameters, same run, WikiText-2 train.

Skip-gram, 100 dimensions, window 5, 5 negatives, min_count 5, sample 1e-3, 5 epochs,
2 threads. Reports training words/s (corpus words × epochs / training seconds, the same
numerator for both), Google-analogy accuracy (top 30 000 words, 3CosAdd) and WordSim-353 /
SimLex-999 Spearman ρ, all computed by lmlab's evaluator for both models (gensim's own
evaluator's numbers for gensim are printed too). Training is timed in ``--rounds`` interleaved
rounds (lmlab, gensim, lmlab, …; medians; the load average of each round) after lmlab's kernels
are compiled; quality is that of the last round's models. The machine (CPU model, ISA, cores) is
printed first. The last line is one JSON object.

    python bench/word2vec.py [--data DIR] [--epochs 5] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmlab.core.machine import cpu_info  # noqa: E402
from lmlab.data import text_file  # noqa: E402
from lmlab.embeddings import Word2Vec, Word2VecConfig, WordVectors, build_vocab, encode  # noqa: E402
from lmlab.embeddings.evaluate import evaluate_analogies, evaluate_similarity  # noqa: E402
from lmlab.embeddings.vocab import sentences  # noqa: E402


def scores(wv: WordVectors, data: Path) -> dict:
    ws = evaluate_similarity(wv, data / "wordsim" / "wordsim353.tsv")
    sl = evaluate_similarity(wv, data / "wordsim" / "simlex999.txt")
    an = evaluate_analogies(wv, data / "wordsim" / "questions-words.txt", restrict_vocab=30_000)
    return {"analogy_accuracy": round(an.accuracy, 4), "analogy_questions": an.questions,
            "wordsim353_spearman": round(ws.spearman, 4), "simlex999_spearman": round(sl.spearman, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("LMLAB_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median)")
    args = parser.parse_args()
    machine = cpu_info()
    print(json.dumps({"machine": machine}), flush=True)
    data = Path(args.data)
    corpus = text_file(data / "wikitext-2" / "train.txt")
    raw_words = sum(len(s) for s in sentences(corpus))

    # lmlab: count, encode, train (timed separately); the kernels are compiled before timing
    cfg = Word2VecConfig(dim=100, architecture="skipgram", loss="ns", negative=5, window=5, min_count=5,
                         sample=1e-3, epochs=args.epochs, threads=args.threads, seed=args.seed)
    t0 = time.perf_counter()
    vocab = build_vocab(corpus, min_count=cfg.min_count)
    ids, starts = encode(corpus, vocab)
    prep_s = time.perf_counter() - t0

    # gensim: same hyper-parameters, its fastest input (pre-split sentences held in memory)
    from gensim.models import Word2Vec as GensimWord2Vec

    sents = list(sentences(corpus))

    def train_ours() -> tuple[Word2Vec, float]:
        model = Word2Vec(cfg, vocab)
        return model, model.train(ids, starts).seconds

    def train_gensim() -> tuple[GensimWord2Vec, float, float]:
        t0 = time.perf_counter()
        gm = GensimWord2Vec(vector_size=100, sg=1, hs=0, negative=5, window=5, min_count=5, sample=1e-3,
                            workers=args.threads, seed=args.seed)
        gm.build_vocab(sents)
        g_prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        gm.train(sents, total_examples=gm.corpus_count, epochs=args.epochs)
        return gm, g_prep, time.perf_counter() - t0

    rounds = []
    for _ in range(args.rounds):
        load = round(os.getloadavg()[0], 2)
        model, ours_s = train_ours()
        gm, g_prep, g_train = train_gensim()
        rounds.append({"load": load, "lmlab_s": ours_s, "gensim_s": g_train})
    ours_train = statistics.median(r["lmlab_s"] for r in rounds)
    g_train = statistics.median(r["gensim_s"] for r in rounds)
    ours = {"train_seconds": round(ours_train, 3), "prepare_seconds": round(prep_s, 3),
            "words_per_s": round(raw_words * args.epochs / ours_train), "vocab": len(vocab)}
    ours.update(scores(model.wv, data))
    gwv = WordVectors(list(gm.wv.index_to_key), gm.wv.vectors)
    theirs = {"train_seconds": round(g_train, 3), "prepare_seconds": round(g_prep, 3),
              "words_per_s": round(raw_words * args.epochs / g_train), "vocab": len(gm.wv)}
    theirs.update(scores(gwv, data))
    own = gm.wv.evaluate_word_analogies(str(data / "wordsim" / "questions-words.txt"), restrict_vocab=30_000)[0]
    theirs["analogy_accuracy_by_gensim_evaluator"] = round(own, 4)

    result = {
        "benchmark": "word2vec skip-gram NS, WikiText-2 train",
        "machine": machine, "corpus_words": raw_words, "epochs": args.epochs, "threads": args.threads,
        "rounds": args.rounds, "load_per_round": [r["load"] for r in rounds],
        "words_per_s_ratio_per_round": [round(r["gensim_s"] / r["lmlab_s"], 3) for r in rounds],
        "lmlab": ours, "gensim": theirs,
        "words_per_s_ratio_vs_gensim": round(ours["words_per_s"] / theirs["words_per_s"], 3),
        "analogy_points_vs_gensim": round(100 * (ours["analogy_accuracy"] - theirs["analogy_accuracy"]), 2),
        "wordsim353_points_vs_gensim": round(100 * (ours["wordsim353_spearman"] - theirs["wordsim353_spearman"]), 2),
        "simlex999_points_vs_gensim": round(100 * (ours["simlex999_spearman"] - theirs["simlex999_spearman"]), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
