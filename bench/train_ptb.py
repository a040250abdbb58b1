"""Word-level Penn Treebank: the classic table — 5-gram KN, Bengio feed-forward LM, Zaremba's small
2-layer LSTM (200 units; published test perplexity 114.5, target ≤ 120) and a small transformer.

Recurrent and feed-forward models read the training stream (each line followed by its
end-of-sentence id) as ``batch`` contiguous streams, ``bptt`` tokens at a time, and are scored
on the whole valid/test streams with their state carried; the transformer trains on random
windows and is scored with sliding windows (context 128, 64 new tokens per window).

The LSTM row is Zaremba et al. (2014)'s "small, non-regularized" setting exactly: batch 20,
bptt 20, uniform ±0.1 init, no dropout, SGD lr 1 and gradient-norm clipping at 5 on the loss
*summed over the 20 steps* (averaged over the batch), lr constant for 4 epochs then halved
every epoch, 13 epochs. lmlab's objective is the per-token mean (the sum / 20), so the same
updates are lr 20 and clipping 0.25 here. ``--epochs lstm=E --hold lstm=H`` shortens the
recipe (hold H epochs, then halve every ``--halve-every`` epochs until E) for a busy machine.

Every model trains in ``--out/NAME`` with checkpoints, so a killed run continues where it
stopped with ``--resume`` (bit-identical to an uninterrupted run). The 5-gram KN row uses
``lmlab.ngram.NgramLM`` (interpolated modified Kneser–Ney). Last line: one JSON object with
test (and valid) perplexity and wall time per model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/

import torch  # noqa: E402

from lmlab.core.progress import set_quiet  # noqa: E402
from lmlab.data import dataset_corpus  # noqa: E402
from lmlab.data.loaders import ContiguousStream, RandomWindows  # noqa: E402
from lmlab.data.shards import HEADER_FILE, TokenShards, write_shards  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402
from lmlab.train import CausalLM, TrainConfig, build_model, stream_loss, train  # noqa: E402

# name: (family, model settings, training settings, batch, bptt/context, epochs, epochs held before decay)
RECIPES = {
    "feedforward": ("feedforward", dict(order=5, d_embed=128, d_hidden=256, dropout=0.0),
                    dict(optimizer="adamw", lr=2e-3, weight_decay=0.0, schedule="cosine", warmup=100,
                         clip=1.0), 20, 35, 1.0, None),
    "lstm": ("lstm", dict(d_embed=200, d_hidden=200, n_layers=2, dropout=0.0, init_range=0.1),
             dict(optimizer="sgd", lr=20.0, weight_decay=0.0, schedule="step", clip=0.25), 20, 20, 13.0, 4.0),
    "transformer": ("gpt2", dict(d_model=128, n_layers=2, n_heads=4, dropout=0.1, context_length=128),
                    dict(optimizer="adamw", lr=2e-3, weight_decay=0.1, schedule="cosine", warmup=200,
                         clip=1.0, beta2=0.98), 8, 128, 1.0, None),
}


def parse_map(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="kn,feedforward,lstm,transformer")
    p.add_argument("--epochs", default="", help="per-model epochs overriding the recipe, e.g. lstm=6,transformer=0.5")
    p.add_argument("--hold", default="", help="per-model epochs at the full lr before step decay, e.g. lstm=4")
    p.add_argument("--halve-every", type=float, default=1.0, help="epochs between halvings of the step schedule")
    p.add_argument("--out", default=None, help="run directories (default: a new temporary directory)")
    p.add_argument("--resume", action="store_true", help="continue the runs in --out from their checkpoints")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    set_quiet(True)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-ptb-"))
    corpora = {split: dataset_corpus("ptb", split) for split in ("train", "valid", "test")}
    tokenizer = WordLevelTokenizer("word").train(corpora["train"])
    shards = {split: TokenShards(out / "data" / split) if args.resume and (out / "data" / split / HEADER_FILE).exists()
              else write_shards(c, tokenizer, out / "data" / split) for split, c in corpora.items()}
    epochs_of, hold_of = parse_map(args.epochs), parse_map(args.hold)
    rows: dict[str, dict] = {}
    wanted = args.models.split(",")
    if "kn" in wanted:
        rows["5-gram KN"] = kn_row(corpora, tokenizer)
        print(json.dumps({"5-gram KN": rows["5-gram KN"]}), flush=True)
    for name in wanted:
        if name not in RECIPES:
            continue
        family, settings, training, batch, bptt, epochs, hold = RECIPES[name]
        epochs, hold = epochs_of.get(name, epochs), hold_of.get(name, hold)
        tokens_per_step = batch * bptt
        steps_per_epoch = (len(shards["train"]) - 1) // tokens_per_step
        steps = max(1, round(epochs * steps_per_epoch))
        schedule = dict(training)
        if schedule["schedule"] == "step":
            schedule.update(decay_steps=round(hold * steps_per_epoch),
                            decay_every=max(1, round(args.halve_every * steps_per_epoch)), decay_factor=0.5)
        torch.manual_seed(0)
        model = build_model(family, settings, tokenizer)
        config = TrainConfig(steps=steps, device="cpu", log_every=50, checkpoint_every=args.checkpoint_every,
                             **schedule)
        if family == "gpt2":
            source, objective = RandomWindows(shards["train"], batch, bptt, seed=0), CausalLM()
        else:
            source, objective = ContiguousStream(shards["train"], batch, bptt), CausalLM(carry_state=True)
        began = time.perf_counter()
        result = train(model, objective, source, config, out / name, resume=args.resume)
        seconds = time.perf_counter() - began
        model.eval()
        ppl = {split: round(math.exp(stream_loss(model, shards[split], context=bptt, batch_size=10)), 2)
               for split in ("valid", "test")}
        rows[name] = {"test_ppl": ppl["test"], "valid_ppl": ppl["valid"], "train_loss": round(result.final_loss, 4),
                      "steps": steps, "epochs": round(steps / steps_per_epoch, 3), "batch": batch, "bptt": bptt,
                      "train_s_this_process": round(seconds, 1), "train_s_estimate": train_seconds(out / name, steps),
                      "schedule": schedule,
                      "parameters": sum(p.numel() for p in model.parameters())}
        print(json.dumps({name: rows[name]}), flush=True)
    print(json.dumps({"bench": "train_ptb", "threads": args.threads, "lstm_target_test_ppl": 120,
                      "zaremba_small_test_ppl": 114.5, "models": rows}))


def train_seconds(run_dir: Path, steps: int) -> float:
    """Whole-run training time (all processes of a resumed run): mean logged step time × steps."""
    times = [json.loads(line).get("ms_per_step") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [t for t in times if t is not None]
    return round(sum(times) / len(times) * steps / 1000, 1) if times else 0.0


def kn_row(corpora, tokenizer) -> dict:
    try:
        from lmlab.ngram import NgramLM
    except ImportError:
        return {"skipped": "lmlab.ngram has no NgramLM in this checkout"}
    from lmlab.eval import evaluate_lm

    began = time.perf_counter()
    lm = NgramLM.fit_corpus(corpora["train"], tokenizer, order=5, smoothing="mkn")
    seconds = time.perf_counter() - began
    score = evaluate_lm(lm, tokenizer, corpora["test"])
    return {"test_ppl": round(score.perplexity, 2), "train_s": round(seconds, 1),
            "note": "sentence-level (BOS … EOS per line), interpolated modified Kneser-Ney"}


if __name__ == "__main__":
    main()
