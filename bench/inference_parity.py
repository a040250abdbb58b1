"""SmolLM2 from its GGUF in lmlab vs ``transformers`` reading the same GGUF (fp32): the full check.

20 prompts: max abs difference of next-token logits over every prompt position, and whether the
greedy continuations of 64 tokens are identical (EOS suppressed in both, as transformers'
``min_new_tokens`` does). The unit test runs a small slice
of this (3 prompts, 16 tokens). The last line is one JSON object.
Run: python bench/inference_parity.py [--prompts 20] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/tokenizers.py is not HF's
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
