"""kNN-LM: a protocol model (sums to 1, score = step-by-step), λ=0 is the base, and it lowers perplexity."""

import itertools

import pytest
import torch

from lmlab.core.errors import DataError, ModelError
from lmlab.lm import LanguageModel
from lmlab.ngram import UnigramLM
from lmlab.retrieval.knnlm import KNNLM, Datastore, last_tokens_encoder

SEQS = [[1, 3, 4, 5, 2], [1, 3, 4, 6, 2], [1, 5, 3, 4, 2], [1, 6, 6, 3, 4, 5, 2]]


def small_model(lam=0.4, k=4):
    base = UnigramLM.fit(SEQS, 7, bos_id=1, eos_id=2)
    enc = last_tokens_encoder(7, dim=8, window=2)
    return base, KNNLM(base, enc, Datastore.build(enc, SEQS), lam=lam, k=k, temperature=0.5)


def test_knnlm_is_a_normalised_protocol_model_and_score_matches_stepping():
    base, model = small_model()
    ids = torch.tensor([[1, 3, 4, 5, 2], [1, 6, 3, 4, 2]])
    lp, state = model.next_logprobs(ids[:, :2], model.initial_state(2))
    assert torch.allclose(lp.exp().sum(1), torch.ones(2, dtype=torch.float64), atol=1e-9)
    stepped = LanguageModel.score(model, ids)  # the protocol's generic loop over next_logprobs
    assert torch.allclose(model.score(ids), stepped, atol=1e-9)
    # after "3" the datastore always saw "4": the mixture moves mass onto it
    assert model.score(torch.tensor([[1, 3, 4]]))[0, 1] > base.score(torch.tensor([[1, 3, 4]]))[0, 1]
    picked = model.select_state(state, torch.tensor([1, 1, 0]))
    assert [h.tolist() for h in picked[1]] == [[1, 6], [1, 6], [1, 3]]


def test_lambda_zero_is_the_base_model_and_bad_input_is_clear():
    base, model = small_model(lam=0.0)
    ids = torch.tensor([[1, 3, 4, 6, 2]])
    assert torch.allclose(model.score(ids), base.score(ids).double())
    enc = last_tokens_encoder(7, dim=8)
    with pytest.raises(DataError, match="no sequence"):
        Datastore.build(enc, [[1]])
    with pytest.raises(ModelError, match="vocabulary"):
        KNNLM(UnigramLM(torch.ones(5)), enc, Datastore.build(enc, SEQS))


def test_knnlm_lowers_wikitext2_perplexity_of_its_base(no_progress):
    from lmlab.data import open_corpus
    from lmlab.eval import evaluate_lm
    from lmlab.tokenizers import WordLevelTokenizer
    from tests.conftest import need_data

    need_data("wikitext-2", "train.txt")
    need_data("wikitext-2", "test.txt")
    train = list(itertools.islice(iter(open_corpus("wikitext-2:train")), 150))
    test = list(itertools.islice(iter(open_corpus("wikitext-2:test")), 15))
    tok = WordLevelTokenizer("word", min_count=2).train(train)
    base = UnigramLM.fit_corpus(train, tok)
    enc = last_tokens_encoder(tok.vocab_size, dim=32, window=1)
    store = Datastore.build(enc, ([tok.bos_id] + tok.encode(d) + [tok.eos_id] for d in train))
    knn = KNNLM(base, enc, store, lam=0.25, k=32)
    assert evaluate_lm(knn, tok, test, batch_size=4).perplexity < 0.9 * evaluate_lm(base, tok, test).perplexity
