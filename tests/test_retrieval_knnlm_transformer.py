"""kNN-LM over a transformer's final hidden states: batched datastore build, the protocol holds."""

import pytest
import torch

from lmlab.core.errors import ModelError
from lmlab.lm import LanguageModel
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.retrieval.knnlm import KNNLM, Datastore, hidden_state_encoder


def tiny(preset: str = "llama") -> TransformerLM:
    torch.manual_seed(0)
    cfg = TransformerConfig.from_preset(preset, vocab_size=11, d_model=16, n_layers=2, n_heads=2,
                                        context_length=32)
    return TransformerLM(cfg).eval()


def test_datastore_from_hidden_states_batched_equals_one_by_one():
    model = tiny()
    enc = hidden_state_encoder(model)
    seqs = [[1, 3, 4, 5, 2], [1, 3, 4, 6, 2], [1, 5, 3], [1, 6, 6, 3, 4, 5, 2], [1, 2, 3, 4, 5]]
    one, many = Datastore.build(enc, seqs), Datastore.build(enc, seqs, batch_size=3)
    assert torch.allclose(one.keys, many.keys, atol=1e-5) and torch.equal(one.values, many.values)
    assert len(one.values) == sum(len(s) - 1 for s in seqs)
    # row t of the encoder is the prefix up to t: the key of (1, 3) → 4 is the state after "1 3"
    assert torch.allclose(one.keys[1], model.hidden_states(torch.tensor([[1, 3]]))[0][0, -1], atol=1e-5)


def test_knnlm_over_a_transformer_is_a_protocol_model():
    model = tiny()
    enc = hidden_state_encoder(model)
    knn = KNNLM(model, enc, Datastore.build(enc, [[1, 3, 4, 5, 2], [1, 3, 4, 6, 2]]), lam=0.3, k=3, temperature=2.0)
    ids = torch.tensor([[1, 3, 4, 5, 2], [1, 6, 3, 4, 2]])
    assert torch.allclose(knn.score(ids), LanguageModel.score(knn, ids), atol=1e-6)
    lp, _ = knn.next_logprobs(ids[:, :3], knn.initial_state(2))
    assert torch.allclose(lp.exp().sum(1), torch.ones(2, dtype=torch.float64), atol=1e-9)
    # the exact continuation stored in the datastore becomes likelier than under the base model
    seen = torch.tensor([[1, 3, 4, 5]])
    assert knn.score(seen)[0, -1] > model.score(seen)[0, -1].double()


def test_a_bidirectional_encoder_is_refused():
    with pytest.raises(ModelError, match="causal"):
        hidden_state_encoder(tiny("bert"))
