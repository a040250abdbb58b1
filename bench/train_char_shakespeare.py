"""nanoGPT's CPU recipe on tiny Shakespeare (characters), lmlab's GPT vs transformers' GPT-2 in one loop.

Recipe (nanoGPT README, "I only have a macbook"): 4 layers, 4 heads, 128 channels, context 64,
batch 12, 2000 iterations, AdamW lr 1e-3 (warm-up 100, cosine decay to 1e-4, betas 0.9/0.99,
weight decay 0.1, clipping 1.0), no dropout, no biases; nanoGPT reports validation loss 1.88.
Both models run through lmlab's trainer on the same batches. lmlab's model is trained for
the full recipe (validation loss); then both are timed *interleaved* — alternating chunks of
``--chunk`` steps until each has done ``--timing-steps`` — so that the load of a shared machine
falls on both alike (per-iteration time does not depend on the step).
``--seeds N`` trains the recipe with N seeds (mean and spread); ``--peer-recipe`` also trains
transformers' GPT-2 through the whole recipe with the same seeds, so the recipe's reach is
measured on a model lmlab did not write.
Last line: JSON with ``val_loss``, ``ms_per_iter`` and the peer's figures under ``transformers``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from lmlab.core.progress import set_quiet  # noqa: E402
from lmlab.data import from_texts  # noqa: E402
from lmlab.data.datasets import dataset_file  # noqa: E402
from lmlab.data.loaders import RandomWindows  # noqa: E402
from lmlab.data.shards import write_shards  # noqa: E402
from lmlab.models.config import TransformerConfig  # noqa: E402
from lmlab.models.transformer import TransformerLM  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402
from lmlab.train import CausalLM, TrainConfig, train  # noqa: E402


class HFCausalLM(nn.Module):
    """transformers' GPT-2 behind the (logits, state) call the trainer's objective makes."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, ids: torch.Tensor, state=None):
        return self.hf(input_ids=ids).logits, None


def val_loss(model: nn.Module, windows: RandomWindows, batches: int) -> float:
    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(batches):
            b = windows.batch(i)
            logits, _ = model(b["input"], None)
            losses.append(float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["target"].reshape(-1))))
    model.train()
    return sum(losses) / len(losses)


def recipe(steps: int, seed: int = 1337) -> TrainConfig:
    return TrainConfig(steps=steps, lr=1e-3, min_lr=1e-4, warmup=100, decay_steps=2000, schedule="cosine",
                       beta1=0.9, beta2=0.99, weight_decay=0.1, clip=1.0, device="cpu", seed=seed,
                       log_every=1, checkpoint_every=0)


def nanogpt_model(shape: dict) -> TransformerLM:
    """nanoGPT's model of the recipe: the gpt2 preset without biases or dropout."""
    return TransformerLM(TransformerConfig.from_preset("gpt2", bias=False, dropout=0.0, **shape))


def hf_gpt2(shape: dict, tokenizer) -> nn.Module:
    """transformers' GPT-2 of the recipe's shape (GPT-2 always has biases; nanoGPT's recipe has none)."""
    import transformers

    return HFCausalLM(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=shape["vocab_size"], n_positions=64, n_embd=128, n_layer=4, n_head=4,
        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)))


def seed_run(seed: int, build, train_tokens, windows, args, run_dir: Path) -> float:
    """Validation loss of the recipe with a seed (initialisation and batch order) for ``build()``'s model."""
    torch.manual_seed(seed)
    model = build()
    train(model, CausalLM(), RandomWindows(train_tokens, 12, 64, seed=seed), recipe(args.steps, seed), run_dir)
    return round(val_loss(model, windows, args.eval_batches), 4)


def spread(losses: list[float], first_seed: int = 1337) -> dict:
    out = {"val_loss_by_seed": dict(zip(range(first_seed, first_seed + len(losses)), losses, strict=True)),
           "val_loss_mean": round(statistics.mean(losses), 4)}
    if len(losses) > 1:
        out["val_loss_sd"] = round(statistics.stdev(losses), 4)
    return out


def step_ms(run_dir: Path, skip: int = 0) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["ms_per_step"] for r in records if "ms_per_step" in r][skip:]


def interleaved_timing(models: dict[str, nn.Module], source, args, tmp: Path) -> dict[str, list[float]]:
    """Alternate ``chunk``-step stretches of each model (each resumes its own run exactly)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for done in range(args.chunk, args.timing_steps + 1, args.chunk):
        for name, model in models.items():
            run_dir = tmp / f"timing-{name}"
            before = len(step_ms(run_dir)) if (run_dir / "metrics.jsonl").exists() else 0
            train(model, CausalLM(), source, recipe(done), run_dir, resume=True)
            times[name] += step_ms(run_dir)[before + 2:]  # the first steps after a resume warm up
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--timing-steps", type=int, default=200, help="timed iterations per model (interleaved)")
    p.add_argument("--chunk", type=int, default=20, help="iterations per timing chunk")
    p.add_argument("--eval-batches", type=int, default=200, help="validation batches of 12×64 (nanoGPT: 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    p.add_argument("--seeds", type=int, default=1,
                   help="also train the recipe with this many seeds in all (1337, 1338, ...): mean and spread")
    p.add_argument("--peer-recipe", action="store_true",
                   help="also train transformers' GPT-2 through the whole recipe (as many seeds): its val loss")
    args = p.parse_args()
    if args.chunk < 3 or args.timing_steps < args.chunk:
        p.error("--chunk must be at least 3 (the first 2 steps after each resume warm up, untimed) "
                "and --timing-steps at least --chunk")
    torch.set_num_threads(args.threads)
    set_quiet(True)
    text = dataset_file("tinyshakespeare", "all").read_text(encoding="utf-8")
    cut = int(0.9 * len(text))
    tokenizer = WordLevelTokenizer("char").train(from_texts([text]))
    tmp = Path(tempfile.mkdtemp(prefix="bench-shakespeare-"))
    train_tokens = write_shards(from_texts([text[:cut]]), tokenizer, tmp / "train", eos=False)
    valid_tokens = write_shards(from_texts([text[cut:]]), tokenizer, tmp / "valid", eos=False)
    source = RandomWindows(train_tokens, 12, 64, seed=1337)
    windows = RandomWindows(valid_tokens, 12, 64, seed=7)
    shape = dict(vocab_size=tokenizer.vocab_size, d_model=128, n_layers=4, n_heads=4, context_length=64)

    torch.manual_seed(1337)
    ours = nanogpt_model(shape)
    began = time.perf_counter()
    result = train(ours, CausalLM(), source, recipe(args.steps), tmp / "lmlab")
    lmlab_result = {"steps": args.steps, "val_loss": round(val_loss(ours, windows, args.eval_batches), 4),
                    # nanoGPT's CPU command estimates with --eval_iters=20 (noisier): the first 20 of the same batches
                    "val_loss_20_batches": round(val_loss(ours, windows, 20), 4),
                    "train_loss": round(result.final_loss, 4), "wall_s": round(time.perf_counter() - began, 1),
                    # the first 5 steps warm up (a run of 5 steps or fewer keeps them all)
                    "ms_per_iter_whole_run": round(statistics.median(step_ms(tmp / "lmlab", 5)
                                                                     or step_ms(tmp / "lmlab")), 2),
                    "parameters": sum(p.numel() for p in ours.parameters())}
    print(json.dumps({"lmlab": lmlab_result}), flush=True)
    if args.seeds > 1:
        losses = [lmlab_result["val_loss"]]
        for seed in range(1338, 1337 + args.seeds):
            losses.append(seed_run(seed, lambda: nanogpt_model(shape), train_tokens, windows, args,
                                   tmp / f"seed-{seed}"))
            print(json.dumps({"seed": seed, "val_loss": losses[-1]}), flush=True)
        lmlab_result.update(spread(losses))

    peer: dict = {}
    models = {"lmlab": nanogpt_model(shape)}
    try:
        import transformers

        torch.manual_seed(1337)
        models["transformers"] = hf_gpt2(shape, tokenizer)
        peer = {"version": transformers.__version__,
                "parameters": sum(p.numel() for p in models["transformers"].parameters()),
                "note": "GPT-2 always has biases (lmlab's run has none, as in nanoGPT)"}
    except ImportError:
        peer = {"skipped": "transformers is not installed"}
    if args.peer_recipe and "transformers" in models:  # the peer's model through the whole recipe, same seeds
        losses = []
        for seed in range(1337, 1337 + args.seeds):
            losses.append(seed_run(seed, lambda: hf_gpt2(shape, tokenizer), train_tokens, windows, args,
                                   tmp / f"peer-seed-{seed}"))
            print(json.dumps({"peer_seed": seed, "val_loss": losses[-1]}), flush=True)
        peer["recipe"] = spread(losses)
    times = interleaved_timing(models, source, args, tmp)
    lmlab_result["ms_per_iter"] = round(statistics.median(times["lmlab"]), 2)
    if "transformers" in times:
        peer["ms_per_iter"] = round(statistics.median(times["transformers"]), 2)
        peer["timed_steps"] = args.timing_steps
        peer["val_loss_after_timing"] = round(val_loss(models["transformers"], windows, args.eval_batches), 4)
    out = {"bench": "train_char_shakespeare", "val_loss": lmlab_result["val_loss"],
           "val_loss_mean_over_seeds": lmlab_result.get("val_loss_mean"),
           "peer_val_loss_mean_over_seeds": peer.get("recipe", {}).get("val_loss_mean"), "target_val_loss": 1.88,
           "ms_per_iter": lmlab_result["ms_per_iter"], "steps": args.steps, "threads": args.threads,
           "lmlab": lmlab_result, "transformers": peer, "torch": torch.__version__, "cpu_count": os.cpu_count()}
    if "ms_per_iter" in peer:
        out["speed_ratio_vs_transformers"] = round(peer["ms_per_iter"] / lmlab_result["ms_per_iter"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
