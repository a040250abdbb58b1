"""Benchmark: ELMo features (Peters et al., 2018) against static and random word vectors, measured on
one downstream task. A biLM (``--family elmo``: forward and backward 2-layer LSTMs, tied embeddings
and softmax) is pretrained briefly on WikiText-2 with the ``bilm`` objective through ``lmlab.train
.pretrain``; then the same small tagger (task BiLSTM + softmax) learns CoNLL-2003 POS tags from
(a) a trainable embedding of the biLM's width from random initialisation, (b) the frozen biLM's token
layer only (static, context-free pretrained vectors) and (c) ELMo: all frozen layers mixed by a
learned ``ScalarMix``. Same vocabulary, steps, batches and seed for the three; token accuracy on the
CoNLL-2003 test sentences.

Run: LMLAB_DATA=/path/to/shared/data nice -n 10 python bench/elmo.py [--pretrain-steps 600] [--tag-steps 400]
     [--save-bilm DIR] (then --bilm DIR/model reuses the pretrained biLM)
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmlab.core.progress import set_quiet  # noqa: E402
from lmlab.data import dataset_corpus  # noqa: E402
from lmlab.data.conll import read_conll  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.tagging.elmo import FEATURES, bilm_tagger_accuracy, fit_bilm_tagger, word_ids  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402
from lmlab.train import pretrain  # noqa: E402

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--tag-steps", type=int, default=400)
    parser.add_argument("--width", type=int, default=128, help="biLM embedding and LSTM width")
    parser.add_argument("--vocab", type=int, default=20000, help="biLM vocabulary (most frequent WikiText-2 words)")
    parser.add_argument("--train-sentences", type=int, default=2000, help="CoNLL-2003 training sentences (0 = all)")
    parser.add_argument("--test-sentences", type=int, default=0, help="CoNLL-2003 test sentences (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bilm", help="a biLM model directory to use instead of pretraining one")
    parser.add_argument("--save-bilm", help="keep the pretrained biLM's run directory here (RUN/model)")
    args = parser.parse_args()
    os.environ["LMLAB_DATA"] = str(DATA)
    torch.set_num_threads(1)
    set_quiet(True)
    out: dict = {"pretrain_steps": args.pretrain_steps, "tag_steps": args.tag_steps, "width": args.width,
                 "load_before": os.getloadavg()[0]}
    train_text = dataset_corpus("wikitext-2", "train")
    if not args.bilm:
        tokenizer = WordLevelTokenizer("word", max_size=args.vocab).train(train_text)
        out["vocab"] = tokenizer.vocab_size
    tagged = read_conll(DATA / "conll2003" / "train.txt", "pos")
    test = read_conll(DATA / "conll2003" / "test.txt", "pos")
    tagged = tagged[:args.train_sentences] if args.train_sentences else tagged
    test = test[:args.test_sentences] if args.test_sentences else test
    with tempfile.TemporaryDirectory() as tmp:
        if args.bilm:
            bilm, tokenizer = load_model(args.bilm)
            out["vocab"], out["bilm"] = tokenizer.vocab_size, args.bilm
            del out["pretrain_steps"]
        else:
            start = time.perf_counter()
            result = pretrain("elmo", train_text, tokenizer, Path(args.save_bilm or Path(tmp) / "bilm"),
                              model={"d_embed": args.width, "d_hidden": args.width, "n_layers": 2, "dropout": 0.1},
                              training={"steps": args.pretrain_steps, "lr": 2e-3, "schedule": "cosine",
                                        "warmup": args.pretrain_steps // 20, "clip": 1.0, "seed": args.seed,
                                        "eval_every": args.pretrain_steps, "log_every": 50},
                              valid=dataset_corpus("wikitext-2", "valid"), objective="bilm", batch_size=32,
                              context=20, eval_batches=20)
            out["pretrain_s"] = round(time.perf_counter() - start, 1)
            out["bilm_valid_loss_both_directions"] = round(result.valid_loss, 4)
            out["bilm_valid_perplexity_per_direction"] = round(math.exp(result.valid_loss / 2), 1)
            bilm = result.model
        words = [w for s, _ in test for w in s]
        out["test_words"] = len(words)
        out["test_oov_rate"] = round(sum(i == tokenizer.unk_id for i in word_ids(tokenizer, [words])[0]) / len(words), 4)
        for features in FEATURES[::-1]:  # random, static, elmo
            start = time.perf_counter()
            net, tags, _ = fit_bilm_tagger(bilm, tokenizer, tagged, features, steps=args.tag_steps, seed=args.seed)
            row = {"pos_accuracy": round(bilm_tagger_accuracy(net, tags, tokenizer, test), 4),
                   "train_s": round(time.perf_counter() - start, 1)}
            if features == "elmo":
                row["layer_weights"] = [round(float(w), 3) for w in torch.softmax(net.encoder.mix.weights.detach(), 0)]
                row["gamma"] = round(float(net.encoder.mix.gamma.detach()), 3)
            out[features] = row
            print(features, row, file=sys.stderr, flush=True)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
