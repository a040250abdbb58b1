"""Evol-Instruct (Xu et al. 2023, "WizardLM: Empowering Large Language Models to Follow Complex
Instructions"): an LM rewrites instructions into harder ones (in depth) or new ones of the same
domain (in breadth), answers them, and an elimination step drops failed evolutions.

Each round, every instruction of the pool is evolved once by an operation drawn at random: one of
the five in-depth prompts (add constraints, deepen, concretise, increase reasoning steps,
complicate the input) or the in-breadth prompt — the paper's wording. The evolved instruction is
then answered, and it is *eliminated* (the parent stays in the pool) when (§3.3):

1. it gives no information gain over its parent — an LM judge answers the paper's "Equal / Not
   Equal" prompt (``judge_equal``; without a judge, identical text after normalisation counts);
2. the response contains "sorry" and is short (< 80 words): the model could not answer it;
3. the response is only punctuation and stop words;
4. the instruction copies words of the evolving prompt ("#Rewritten Prompt#", "given prompt", …).

The survivors and their responses are Alpaca rows (``instruction``, ``input`` empty, ``output``).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..analysis.stopwords import NLTK_ENGLISH
from ..core.errors import ConfigError
from ..core.validate import check_number
from .complete import check_settings, complete
from .self_instruct import SynthesisResult

DEPTH_BASE = (
    "I want you act as a Prompt Rewriter.\n"
    "Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems "
    "(e.g., chatgpt and GPT4) a bit harder to handle.\n"
    "But the rewritten prompt must be reasonable and must be understood and responded by humans.\n"
    "Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#:. Also, "
    "please do not omit the input in #The Given Prompt#.\n"
    "You SHOULD complicate the given prompt using the following method:\n{method}\n"
    "You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only "
    "add 10 to 20 words into #The Given Prompt#.\n"
    "'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to "
    "appear in #Rewritten Prompt#\n"
    "#The Given Prompt#:\n{instruction}\n#Rewritten Prompt#:\n")
DEPTH_METHODS = {
    "constraints": "Please add one more constraints/requirements into #The Given Prompt#'",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the "
              "inquiry can be increased.",
    "concretize": "Please replace general concepts with more specific concepts.",
    "reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can rewrite "
                 "it to explicitly request multiple-step reasoning.",
    "complicate_input": "Please add data in a form such as a table, code, JSON, a formula or XML to #The Given "
                        "Prompt# as its input, and make the prompt require that input to be used.",
}
BREADTH = (
    "I want you act as a Prompt Creator.\n"
    "Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.\n"
    "This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.\n"
    "The LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.\n"
    "The #Created Prompt# must be reasonable and must be understood and responded by humans.\n"
    "'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear in "
    "#Created Prompt#\n"
    "#Given Prompt#:\n{instruction}\n#Created Prompt#:\n")
OPERATIONS = (*DEPTH_METHODS, "breadth")
EQUALITY_PROMPT = (
    "Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the "
    "following requirements:\n1. They have same constraints and requirments.\n2. They have same depth and "
    "breadth of the inquiry.\nThe First Prompt: {first}\nThe Second Prompt: {second}\n"
    "Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):")
PROMPT_WORDS = ("#the given prompt#", "#rewritten prompt#", "#given prompt#", "#created prompt#", "given prompt",
                "rewritten prompt", "created prompt")


def evolution_prompt(instruction: str, operation: str) -> str:
    """The paper's rewriting prompt for ``operation`` (a key of DEPTH_METHODS, or 'breadth')."""
    if operation == "breadth":
        return BREADTH.format(instruction=instruction)
    return DEPTH_BASE.format(method=DEPTH_METHODS[operation], instruction=instruction)


def clean_evolved(text: str) -> str:
    """The evolved instruction from a reply: a leading '#Rewritten Prompt#:'-style label removed, stripped."""
    return re.sub(r"^\s*#?(rewritten|created)\s+prompt#?\s*:?\s*", "", text, flags=re.IGNORECASE).strip()


def elimination_reason(parent: str, evolved: str, response: str) -> str | None:
    """The rule (2–4 of the module docstring, and 1 by exact text) an evolution breaks, or None."""
    if not evolved.strip():
        return "empty_instruction"
    lowered = evolved.lower()
    if any(w in lowered for w in PROMPT_WORDS):
        return "copies_prompt_words"
    if " ".join(re.findall(r"\w+", lowered)) == " ".join(re.findall(r"\w+", parent.lower())):
        return "no_information_gain"
    if "sorry" in response.lower() and len(response.split()) < 80:
        return "sorry_short_response"
    words = [w.strip(string.punctuation).lower() for w in response.split()]
    if all(not w or w in NLTK_ENGLISH for w in words):
        return "punctuation_or_stopwords_response"
    return None


def evol_instruct(model: Any, instructions: Sequence[str], *, rounds: int = 1, seed: int = 0, batch_size: int = 16,
                  chat: bool = True, judge_equal: bool = True, instruction_tokens: int = 128,
                  response_tokens: int = 256, temperature: float = 0.7,
                  operations: Sequence[str] = OPERATIONS) -> SynthesisResult:
    """``rounds`` rounds of evolution over ``instructions`` on ``model``; survivors of every round become rows."""
    check_number("rounds", rounds, low=1, integer=True)
    check_settings(batch_size=batch_size, seed=seed, temperature=temperature, instruction_tokens=instruction_tokens,
                   response_tokens=response_tokens)
    unknown = sorted(set(operations) - set(OPERATIONS))
    if unknown or not operations:
        raise ConfigError(f"unknown evolution operation(s) {unknown or '(none given)'}",
                          f"choose from {', '.join(OPERATIONS)}")
    rng = random.Random(seed)
    result = SynthesisResult([], Counter())
    pool = list(instructions)
    for r in range(rounds):
        ops = [rng.choice(list(operations)) for _ in pool]
        evolved = [clean_evolved(x.text) for x in complete(
            model, [evolution_prompt(i, op) for i, op in zip(pool, ops, strict=True)], chat=chat,
            max_tokens=instruction_tokens, temperature=temperature, seed=seed * 1_000_003 + r * len(pool),
            stop=("\n\n#",), batch_size=batch_size, desc=f"evolve round {r + 1}")]
        responses = [x.text.strip() for x in complete(model, evolved, chat=chat, max_tokens=response_tokens,
                                                       batch_size=batch_size, desc=f"answer round {r + 1}")]
        verdicts = [False] * len(pool)
        if judge_equal:
            judged = complete(model, [EQUALITY_PROMPT.format(first=p, second=e) for p, e in zip(pool, evolved,
                                                                                                    strict=True)],
                              chat=chat, max_tokens=4, batch_size=batch_size, desc=f"judge round {r + 1}")
            verdicts = [j.text.strip().lower().startswith("equal") for j in judged]
        next_pool = []
        for parent, op, new, response, equal in zip(pool, ops, evolved, responses, verdicts, strict=True):
            result.counts[f"evolved_{op}"] += 1
            reason = elimination_reason(parent, new, response) or ("no_information_gain" if equal else None)
            if reason is not None:
                result.counts[f"eliminated_{reason}"] += 1
                next_pool.append(parent)
                continue
            result.counts["kept_rows"] += 1
            result.rows.append({"instruction": new, "input": "", "output": response})
            next_pool.append(new)
        pool = next_pool
    return result
