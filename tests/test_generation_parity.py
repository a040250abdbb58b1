"""The real generation path against ``transformers``' ``generate`` on SmolLM2-135M-Instruct (same GGUF,
fp32): greedy chat continuations with a repetition penalty, with n-gram blocking, and with both —
processors that act on raw logits — give the same tokens, 48 new tokens per prompt.

All 20 questions by default (71 s on the 2-core machine); ``LMLAB_PARITY_PROMPTS=6`` runs the first six
for a quicker check."""

from __future__ import annotations

import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.generate.engine import Engine, Request  # noqa: E402
from lmlab.generate.settings import DecodingSettings  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.tokenizers import smollm2_gguf  # noqa: E402

PROMPTS = int(os.environ.get("LMLAB_PARITY_PROMPTS", "20"))
QUESTIONS = ["What is the capital of France?", "Write a haiku about autumn.", "Explain photosynthesis briefly.",
             "Give me three tips for learning a language.", "What is 12 times 13?", "Who wrote Hamlet?",
             "Describe a cat in one sentence.", "How do I boil an egg?", "What is machine learning?",
             "Name the planets of the solar system.", "Why is the sky blue?", "Tell me a short joke.",
             "What does a compiler do?", "Summarise the plot of Cinderella.", "How many legs does a spider have?",
             "Translate 'good morning' to Spanish.", "What is the boiling point of water?",
             "Suggest a name for a pet goldfish.", "What is the largest ocean?", "Write a limerick about a dog."]
CASES = {"repetition": {"repetition_penalty": 1.3}, "ngram": {"no_repeat_ngram_size": 3},
         "both": {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}}
NEW = 48


@pytest.fixture(scope="module")
def models():
    lm, tok = load_model("smollm2-135m-instruct")
    path = smollm2_gguf()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    return lm, tok, hf


def generate_both(lm, tok, hf, questions, fields, new=NEW):
    """(lmlab's, transformers') greedy token ids after each chat question, both batched with left padding."""
    prompts = [chat_prompt(tok, [{"role": "user", "content": q}]) for q in questions]
    settings = DecodingSettings(greedy=True, max_new_tokens=new, **fields)
    ours = Engine(lm, tok, decode_layout=False).generate([Request(p, settings=settings) for p in prompts])
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.eos_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                             pad_token_id=tok.eos_id, eos_token_id=tok.eos_id, **fields)[:, width:]
    return [o.ids for o in ours], [until_eos(row, tok.eos_id) for row in theirs.tolist()]


def until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos)] if eos in ids else ids


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_greedy_with_processors_equals_transformers_generate(models, case):
    lm, tok, hf = models
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ours, theirs = generate_both(lm, tok, hf, QUESTIONS[:PROMPTS], CASES[case])
    finally:
        torch.set_num_threads(threads)
    assert ours == theirs


@pytest.mark.slow
def test_the_generate_cli_applies_both_processors(models, capsys):
    from lmlab.cli import main

    lm, tok, hf = models
    prompt = chat_prompt(tok, [{"role": "user", "content": QUESTIONS[1]}])
    assert main(["generate", "--model", "smollm2-135m-instruct", "--chat", "--prompt", QUESTIONS[1], "--greedy",
                 "--repetition-penalty", "1.3", "--no-repeat-ngram-size", "3", "--max-new-tokens", str(NEW),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=NEW, do_sample=False, pad_token_id=tok.eos_id, eos_token_id=tok.eos_id,
                             repetition_penalty=1.3, no_repeat_ngram_size=3)[0, len(prompt):].tolist()
    assert out["tokens"] == until_eos(theirs, tok.eos_id)
    assert out["strategy"] == "greedy" and out["settings"]["repetition_penalty"] == 1.3
