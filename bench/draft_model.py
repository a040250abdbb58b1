"""Train a draft model for speculative decoding of SmolLM2-135M-Instruct: a few-layer LLaMA that shares
SmolLM2's tokenizer, distilled from SmolLM2's own answers (sequence-level knowledge distillation,
Kim & Rush, 2016) with lmlab's trainer.

1. ``generate``: SmolLM2 answers ``--examples`` Alpaca instructions (greedy, the answers it gives at
   temperature 0, batched through the engine), appended to ``OUT/answers.jsonl`` as chat
   conversations — resumable, so the long part can be stopped and continued.
2. ``train``: a ``--layers``-layer, ``--d-model`` LLaMA whose embedding (tied to its output layer) starts
   from SmolLM2's projected onto its top principal components, trained with the SFT objective (loss
   on the answers only) by ``lmlab.train`` on those conversations (``--repeat`` times) plus
   ``--alpaca-extra`` Alpaca reference answers to other instructions; saved as a model directory
   ``OUT/model`` (with SmolLM2's tokenizer); its loss on held-out SmolLM2 answers is reported.

No smaller SmolLM2 ships here, so this is how ``bench/decoding.py`` gets its draft.
Run: python bench/draft_model.py --out runs/draft [--examples 600] [--steps 1500] [--phase all]
The last line is one JSON object.
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

import torch  # noqa: E402

from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.generate.engine import Engine, Request  # noqa: E402
from lmlab.generate.settings import DecodingSettings  # noqa: E402
from lmlab.models import load_model, save_model_dir  # noqa: E402
from lmlab.models.config import TransformerConfig  # noqa: E402
from lmlab.models.transformer import TransformerLM  # noqa: E402

DATA = Path(os.environ.get("LMLAB_DATA", HERE.parent.parent / "shared" / "data"))


def alpaca_pairs(limit: int, skip: int = 0) -> list[tuple[str, str]]:
    """Alpaca (instruction with its input, when there is one; reference answer) pairs."""
    out = []
    with open(DATA / "instructions" / "alpaca_5000.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out.append((row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else ""), row["output"]))
    return out[skip:skip + limit]


def instructions(limit: int, skip: int = 0) -> list[str]:
    """Alpaca instructions as user turns."""
    return [q for q, _ in alpaca_pairs(limit, skip)]


def generate(out: Path, examples: int, batch: int, max_new: int) -> int:
    """Append SmolLM2's greedy answers to ``out/answers.jsonl``; returns how many exist."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "answers.jsonl"
    done = sum(1 for _ in open(path, encoding="utf-8")) if path.exists() else 0
    todo = instructions(examples)[done:]
    if not todo:
        return done
    lm, tok = load_model("smollm2-135m-instruct")
    engine = Engine(lm, tok, decode_layout=False)
    settings = DecodingSettings(greedy=True, max_new_tokens=max_new)
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        t0 = time.perf_counter()
        outs = engine.generate([Request(chat_prompt(tok, [{"role": "user", "content": q}]), settings=settings)
                                for q in chunk])
        with open(path, "a", encoding="utf-8") as f:
            for q, c in zip(chunk, outs, strict=True):
                f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                                 {"role": "assistant", "content": c.text}]}) + "\n")
        done += len(chunk)
        tokens = sum(len(c.ids) for c in outs)
        print(f"{done}/{examples} answers, {tokens / (time.perf_counter() - t0):.1f} tokens/s", file=sys.stderr,
              flush=True)
    return done


def draft_config(target: TransformerLM, layers: int, d_model: int) -> TransformerConfig:
    c = target.config
    heads = max(1, d_model // 64)
    return TransformerConfig.from_preset("llama", vocab_size=c.vocab_size, d_model=d_model, n_layers=layers,
                                         n_heads=heads, n_kv_heads=max(1, heads // 2), d_ff=int(d_model * 8 / 3),
                                         context_length=c.context_length, rope_theta=c.rope_theta,
                                         tie_embeddings=True)


def projected_embedding(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The embedding rows projected onto their top ``dim`` principal directions, scaled to the init's std."""
    w = weight.float()
    centred = w - w.mean(0)
    _, _, v = torch.linalg.svd(centred[torch.randperm(len(w), generator=torch.Generator().manual_seed(0))[:8192]],
                               full_matrices=False)
    out = centred @ v[:dim].T
    return out * (0.02 / out.std())


def train(out: Path, steps: int, layers: int, d_model: int, batch: int, seq: int, lr: float, heldout: int,
          repeat: int, alpaca_extra: int) -> dict:
    from lmlab.train.sft import SFTBatches, SFTObjective, build_sft_data, sft_loss
    from lmlab.train.trainer import TrainConfig
    from lmlab.train.trainer import train as run_training

    target, tok = load_model("smollm2-135m-instruct")
    conversations = [json.loads(line)["messages"] for line in open(out / "answers.jsonl", encoding="utf-8")]
    held, rest = conversations[:heldout], conversations[heldout:]
    # SmolLM2's own answers, repeated, plus Alpaca's reference answers to instructions it did not answer
    # (more English for a small model; the distilled answers teach it SmolLM2's style)
    extra = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
             for q, a in alpaca_pairs(alpaca_extra, skip=len(conversations))]
    rest = rest * repeat + extra
    torch.manual_seed(0)
    draft = TransformerLM(draft_config(target, layers, d_model),
                          special_ids={k: getattr(target, k) for k in ("bos_id", "eos_id", "pad_id", "unk_id")})
    with torch.no_grad():
        draft.embed.weight.copy_(projected_embedding(target.embed.weight, d_model))
    data = build_sft_data(tok, rest, seq)
    eval_batches = SFTBatches(build_sft_data(tok, held, seq), batch, shuffle=False).batches()
    before = sft_loss(draft, eval_batches)
    config = TrainConfig(steps=steps, lr=lr, warmup=steps // 20, min_lr=lr / 10, weight_decay=0.01, log_every=10,
                         seed=0)
    result = run_training(draft, SFTObjective(), SFTBatches(data, batch, seed=0), config, out / "run")
    draft.eval()
    after = sft_loss(draft, eval_batches)
    save_model_dir(out / "model", *draft.to_state(), tokenizer=tok)
    return {"params": sum(p.numel() for p in draft.parameters()), "train_examples": len(rest),
            "distilled_answers": len(conversations) - heldout, "repeat": repeat, "alpaca_reference_answers": len(extra),
            "train_tokens": data.tokens, "steps": result.steps, "heldout_loss_before": before,
            "heldout_loss_after": after, "model": str(out / "model")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--phase", choices=["generate", "train", "all"], default="all")
    ap.add_argument("--examples", type=int, default=600)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--gen-batch", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--heldout", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="times SmolLM2's answers appear in the training data")
    ap.add_argument("--alpaca-extra", type=int, default=2000, help="Alpaca reference answers added")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    result: dict = {"load_before": os.getloadavg()[0]}
    if args.phase in ("generate", "all"):
        result["answers"] = generate(out, args.examples, args.gen_batch, args.max_new_tokens)
    if args.phase in ("train", "all"):
        result.update(train(out, args.steps, args.layers, args.d_model, args.batch_size, args.max_seq_len, args.lr,
                            args.heldout, args.repeat, args.alpaca_extra))
    result["load_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
