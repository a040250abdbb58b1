"""An LM-as-judge reward for RL post-training (``lmlab.align``'s ``Reward`` interface).

The judge model reads the question and one answer and is asked for a verdict; the reward is the
log-odds of " Yes" over " No" as its next word (Zheng et al. 2023 judge with log-likelihoods, as
``lmlab.eval.pairwise.judge`` does for pairs). Requests go through the evaluation suite's
``RequestRunner``, so repeated (question, answer) pairs are scored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCORE_PROMPT = ("You are an impartial judge. Read the question and the answer, then say whether the answer is "
                "correct and helpful.\n\nQuestion: {question}\n\nAnswer: {answer}\n\n"
                "Is the answer correct and helpful (Yes or No)? Verdict:")


@dataclass
class JudgeReward:
    """log p(" Yes") − log p(" No") after the judge prompt, per (question, answer) sample."""

    runner: Any  # lmlab.eval.requests.RequestRunner
    prompt: str = SCORE_PROMPT
    name: str = "judge"

    def __call__(self, samples: Sequence[Any]) -> list[float]:
        requests = []
        for s in samples:
            context = self.prompt.format(question=s.prompt[-1]["content"], answer=s.completion.strip())
            requests += [(context, " Yes"), (context, " No")]
        scores = self.runner.loglikelihood(requests)
        return [scores[2 * i] - scores[2 * i + 1] for i in range(len(samples))]
