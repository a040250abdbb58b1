"""Benchmark: the posterior-collapse story of a sentence VAE on Penn Treebank, measured. The same LSTM
decoder is trained on the same batches for the same steps as (1) a plain LSTM LM, (2) a VAE with the
plain ELBO, (3) a VAE with linear KL annealing and word dropout (Bowman et al., 2016), (4) a VAE with
cyclical annealing (Fu et al., 2019) and free bits (Kingma et al., 2016); each reports, on PTB
validation sentences, the NLL bound per token and its perplexity (exact for the LM), the KL per
sentence and the active units.

Run: LMLAB_DATA=/path/to/shared/data python bench/vae.py [--steps 600] [--valid 1000] [--runs NAME …]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmlab.models.sentence_vae import SentenceVAE  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402
from lmlab.train.vae import ELBO, SentencePairs, evaluate_vae, train_vae  # noqa: E402

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def lines(split: str) -> list[str]:
    return [line.strip() for line in open(DATA / "ptb" / f"ptb.{split}.txt", encoding="utf-8") if line.strip()]


#: the objective of each configuration, given the steps and the tokenizer
RUNS = {
    "lstm_lm": lambda steps, tok: ELBO(steps, latent=False),
    "vae_plain": lambda steps, tok: ELBO(steps),
    "vae_linear_word_dropout": lambda steps, tok: ELBO(steps, schedule="linear", word_dropout=0.25,
                                                       unk_id=tok.unk_id),
    "vae_cyclical_free_bits": lambda steps, tok: ELBO(steps, schedule="cyclical", cycles=4, free_bits=0.25),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--valid", type=int, default=1000, help="validation sentences (0 = all)")
    parser.add_argument("--d-latent", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS),
                        help="configurations to train (each is seeded alike: one at a time gives the same figures)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_text, valid_text = lines("train"), lines("valid")
    valid_text = valid_text[:args.valid] if args.valid else valid_text
    tok = WordLevelTokenizer("word").train(train_text)
    pairs = {name: SentencePairs([tok.encode(t) for t in text], args.batch_size, bos_id=tok.bos_id,
                                 eos_id=tok.eos_id, pad_id=tok.pad_id)
             for name, text in (("train", train_text), ("valid", valid_text))}
    steps = args.steps
    runs = {name: RUNS[name](steps, tok) for name in args.runs}
    out: dict = {"steps": steps, "batch_size": args.batch_size, "d_latent": args.d_latent, "vocab": tok.vocab_size,
                 "valid_sentences": len(valid_text), "load_before": os.getloadavg()[0]}
    for name, objective in runs.items():
        torch.manual_seed(0)
        model = SentenceVAE(tok.vocab_size, d_embed=128, d_hidden=256, d_latent=args.d_latent, dropout=0.2)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            train_vae(model, pairs["train"], tmp, steps=steps, lr=args.lr, objective=objective)
        scores = evaluate_vae(model, pairs["valid"], latent=objective.latent)
        out[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
        out[name]["train_s"] = round(time.perf_counter() - start, 1)
        print(name, out[name], file=sys.stderr, flush=True)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
