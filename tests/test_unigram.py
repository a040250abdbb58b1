import math

import pytest
import torch

from lmlab.core import ConfigError, DataError
from lmlab.data import from_texts
from lmlab.eval import evaluate_lm
from lmlab.lm import LanguageModel
from lmlab.models import load_model, save_model_dir
from lmlab.ngram import UnigramLM
from lmlab.tokenizers import WordLevelTokenizer

TRAIN = ["the cat sat", "the dog sat", "a cat ran", "the cat", "a dog"]


@pytest.fixture
def word_model(no_progress):
    tok = WordLevelTokenizer("word").train(TRAIN)
    return UnigramLM.fit_corpus(from_texts(TRAIN), tok, smoothing="add-k", k=1.0), tok


def test_add_one_perplexity_by_hand(word_model):
    lm, tok = word_model
    # 13 words + 5 </s> = 18 predicted tokens; predictable ids: <unk>, </s> and 6 words = 8.
    # p = (c + 1) / 26. Test: the(3) cat(3) ran(1) </s>(5) | a(2) bird→<unk>(0) </s>(5)
    expected_logprob = math.log(4 * 4 * 2 * 6 * 3 * 1 * 6 / 26**7)
    score = evaluate_lm(lm, tok, from_texts(["the cat ran", "a bird"]))
    assert score.tokens == 7
    assert score.unk_tokens == 1
    assert score.total_logprob == pytest.approx(expected_logprob, rel=1e-12)
    assert score.perplexity == pytest.approx((26**7 / 3456) ** (1 / 7), rel=1e-12)
    assert score.bytes == len("the cat ran") + 1 + len("a bird") + 1


def test_mle_probabilities(word_model):
    _, tok = word_model
    lm = UnigramLM.fit_corpus(from_texts(TRAIN), tok, smoothing="mle")
    p = lm.logprobs.exp()
    assert p[tok.token_to_id("the")] == pytest.approx(3 / 18)
    assert p[tok.eos_id] == pytest.approx(5 / 18)
    assert p[tok.unk_id] == 0 and p[tok.bos_id] == 0 and p[tok.pad_id] == 0


@pytest.mark.parametrize("smoothing,k", [("mle", 1.0), ("add-k", 1.0), ("add-k", 0.01)])
def test_distribution_sums_to_one_and_never_predicts_bos(word_model, smoothing, k):
    _, tok = word_model
    lm = UnigramLM.fit_corpus(from_texts(TRAIN), tok, smoothing=smoothing, k=k)
    lp, _ = lm.next_logprobs(torch.tensor([[tok.bos_id]]), lm.initial_state(1))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    assert lp[0, tok.bos_id].item() == -math.inf


def test_generic_score_equals_fast_score(word_model):
    lm, tok = word_model
    ids = torch.tensor([[1, 5, 4, 8, 2], [1, 6, 7, 2, 3]])
    assert torch.equal(LanguageModel.score(lm, ids), lm.score(ids))


def test_invalid_smoothing_settings():
    with pytest.raises(ConfigError, match="k = -1.0 is out of range"):
        UnigramLM([1.0, 2.0], smoothing="add-k", k=-1.0)
    with pytest.raises(ConfigError, match="not supported"):
        UnigramLM([1.0], smoothing="kneser-ney")
    with pytest.raises(DataError, match="saw no tokens"):
        UnigramLM([0.0, 0.0], smoothing="mle")


def test_model_directory_round_trip(tmp_path, word_model):
    lm, tok = word_model
    save_model_dir(tmp_path / "m", *lm.to_state(), tokenizer=tok)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                                   "tokenizer_config.json"]
    lm2, tok2 = load_model(tmp_path / "m")
    assert torch.equal(lm2.logprobs, lm.logprobs) and tok2.vocab == tok.vocab
    assert lm2.eos_id == tok.eos_id
