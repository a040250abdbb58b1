"""SmolLM2 from its GGUF in lmlab vs ``transformers`` reading the same GGUF (fp32): the full check.

20 prompts: max abs difference of next-token logits over every prompt position, and whether the
greedy continuations of 64 tokens are identical (EOS suppressed in both, as transformers'
``min_new_tokens`` does). The unit test runs a small slice
of this (3 prompts, 16 tokens). With ``--quant int8`` it measures instead how far lmlab's
int8-weight model is from its fp32 one on the same prompts: identical greedy continuations,
greedy tokens equal before the first difference, and the mean and max |Δ log p| of fp32's
greedy tokens scored by both (teacher-forced, so every token counts).
The last line is one JSON object.
Run: python bench/inference_parity.py [--prompts 20] [--new-tokens 64] [--quant int8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.generate import BanTokens  # noqa: E402
from lmlab.generate.engine import Engine, Request  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.tokenizers import smollm2_gguf  # noqa: E402

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three laws of thermodynamics are", "import numpy as np\n", "Dear Sir or Madam,",
           "The recipe calls for two cups of", "In 1969, the first humans", "Photosynthesis is the process",
           "SELECT name FROM users WHERE", "The quick brown fox", "To be, or not to be:",
           "Machine learning is a field of", "The best way to learn a language is", "Water boils at",
           "Once the rain stopped, the children", "A haiku about autumn:\n", "The largest planet in the solar system",
           "My favourite book is", "Translate to French: good morning ->"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quant", default=None, choices=["int8"], help="compare lmlab int8 weights with lmlab fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quant:
        return quant_drift(args)
    import transformers

    lm, tok = load_model("smollm2-135m-instruct")
    path = smollm2_gguf()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    # transformers' min_new_tokens suppresses EOS until the length is reached: lmlab bans it the same way
    engine = Engine(lm, tok, greedy=True, processors=[BanTokens((tok.eos_id,))])
    worst, same = 0.0, 0
    for text in PROMPTS[:args.prompts]:
        ids = tok.encode(text)
        with torch.no_grad():
            diff = (lm(torch.tensor([ids]))[0] - hf(torch.tensor([ids])).logits).abs().max().item()
            theirs = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                                 pad_token_id=0)[0, len(ids):].tolist()
        ours = engine.generate([Request(ids, max_new_tokens=args.new_tokens, stop_ids=[])])[0].ids
        worst, same = max(worst, diff), same + (ours == theirs)
    n = min(args.prompts, len(PROMPTS))
    print(json.dumps({"prompts": n, "new_tokens": args.new_tokens, "max_abs_logit_diff": worst,
                      "identical_greedy_continuations": same, "logits_within_1e-4": worst <= 1e-4,
                      "transformers": transformers.__version__}))


def quant_drift(args: argparse.Namespace) -> None:
    from lmlab.quant import quantize_model

    lm, tok = load_model("smollm2-135m-instruct")
    low = quantize_model(load_model("smollm2-135m-instruct")[0], args.quant)
    ban = [BanTokens((tok.eos_id,))]
    same, agreed, drifts = 0, [], []
    for text in PROMPTS[:args.prompts]:
        ids = tok.encode(text)
        request = Request(ids, max_new_tokens=args.new_tokens, stop_ids=[])
        ref = Engine(lm, tok, greedy=True, processors=ban).generate([request])[0]
        ours = Engine(low, tok, greedy=True, processors=ban).generate([request])[0]
        same += ours.ids == ref.ids
        agreed.append(next((i for i, (a, b) in enumerate(zip(ref.ids, ours.ids, strict=True)) if a != b),
                           len(ref.ids)))
        full = torch.tensor([ids + ref.ids])
        with torch.no_grad():
            a, b = (m(full)[0][0, len(ids) - 1:-1].float().log_softmax(-1) for m in (lm, low))
        target = torch.tensor(ref.ids).unsqueeze(1)
        drifts.extend((a.gather(1, target) - b.gather(1, target)).abs().squeeze(1).tolist())
    n = min(args.prompts, len(PROMPTS))
    print(json.dumps({"quant": args.quant, "prompts": n, "new_tokens": args.new_tokens,
                      "identical_greedy_continuations": same,
                      "mean_tokens_equal_before_first_difference": sum(agreed) / n,
                      "mean_abs_logprob_diff": sum(drifts) / len(drifts), "max_abs_logprob_diff": max(drifts)}))


if __name__ == "__main__":
    main()
