"""Re-ranking by a protocol model's relevance log-probability."""

import math

import pytest
import torch

from lmlab.core.errors import DataError
from lmlab.lm import LanguageModel
from lmlab.retrieval.rerank import relevance_logprobs, rerank
from lmlab.tokenizers import WordLevelTokenizer

TOK = WordLevelTokenizer("word").train(["Query: Passage: Does the passage answer the query? Answer: yes no "
                                        "cats purr dogs bark birds sing cats"])
YES = TOK.token_to_id("yes")


class CatCounter(LanguageModel):
    """p(yes) grows with the number of 'cats' seen so far: a transparent stand-in for a chat model."""

    vocab_size = TOK.vocab_size
    pad_id = TOK.pad_id

    def initial_state(self, batch_size):
        return torch.zeros(batch_size)

    def next_logprobs(self, tokens, state):
        state = state + (tokens == TOK.token_to_id("cats")).sum(1)
        logits = torch.zeros(len(tokens), self.vocab_size)
        logits[:, YES] = state
        return torch.log_softmax(logits, 1), state

    def select_state(self, state, index):
        return state[index]


def test_relevance_is_the_answer_log_probability():
    lp = relevance_logprobs(CatCounter(), TOK, "cats", ["dogs bark", "cats purr cats"], batch_size=1)
    v = TOK.vocab_size
    assert lp[0] == pytest.approx(math.log(math.e ** 1 / (math.e ** 1 + v - 1)))  # the query's "cats" only
    assert lp[1] == pytest.approx(math.log(math.e ** 3 / (math.e ** 3 + v - 1)))
    assert relevance_logprobs(CatCounter(), TOK, "cats", ["dogs bark", "cats purr cats"], batch_size=8) == \
        pytest.approx(lp)


def test_rerank_reorders_the_head_and_keeps_the_tail():
    texts = {"a": "dogs bark", "b": "cats purr", "c": "cats cats sing", "d": "birds sing"}
    hits = [("a", 9.0), ("b", 8.0), ("c", 7.0), ("d", 1.0)]
    out = rerank(CatCounter(), TOK, "which purr", hits, texts, top=3)
    assert [d for d, _ in out] == ["c", "b", "a", "d"] and out[-1] == ("d", 1.0)
    with pytest.raises(DataError, match="no text"):
        rerank(CatCounter(), TOK, "q", [("zzz", 1.0)], texts)
