"""Add-1 unigram perplexity on PTB test, against an independent computation from raw counts."""

import json
import math
from collections import Counter

import pytest

from lmlab.cli import main
from tests.conftest import need_data


def independent_add1_perplexity(train_path, test_path) -> float:
    counts = Counter()
    for line in open(train_path, encoding="utf-8"):
        counts.update(line.split() + ["</s>"])
    n, v = sum(counts.values()), len(counts)  # </s> and <unk> are ordinary types here
    logprob, tokens = 0.0, 0
    for line in open(test_path, encoding="utf-8"):
        for w in line.split() + ["</s>"]:
            logprob += math.log((counts.get(w if w in counts else "<unk>", 0) + 1) / (n + v))
            tokens += 1
    return math.exp(-logprob / tokens)


@pytest.mark.slow
def test_ptb_add1_unigram_matches_independent_computation(capsys):
    train, test = need_data("ptb", "ptb.train.txt"), need_data("ptb", "ptb.test.txt")
    code = main(["eval", "perplexity", "--model", "unigram", "--smoothing", "add-k", "--k", "1",
                 "--train", str(train), "--data", str(test), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == 82430  # 78,669 words + 3,761 sentence ends (the data README's count)
    assert result["perplexity"] == pytest.approx(independent_add1_perplexity(train, test), rel=1e-6)
