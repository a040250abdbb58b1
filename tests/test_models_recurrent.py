"""Feed-forward (Bengio) and recurrent LMs: state carries exactly, saving round-trips."""

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError
from lmlab.models import load_model, save_model_dir
from lmlab.models.feedforward import FeedForwardLM
from lmlab.models.recurrent import RecurrentLM

V = 29


def models():
    torch.manual_seed(0)
    out = [RecurrentLM(V, cell=c, d_embed=12, d_hidden=12, n_layers=2, tie_embeddings=c == "gru")
           for c in ("rnn", "lstm", "gru")]
    out.append(FeedForwardLM(V, order=4, d_embed=8, d_hidden=16, direct=True))
    for m in out:
        m.set_special_ids({"bos_id": 1, "eos_id": 2, "pad_id": None, "unk_id": 0})
        m.eval()
    return out


@pytest.mark.parametrize("model", models(), ids=["rnn", "lstm", "gru", "feedforward"])
def test_incremental_equals_full_and_causal(model, tmp_path):
    ids = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(2))
    ids[:, 0] = 1
    full = torch.log_softmax(model(ids)[0], -1)
    logprobs, state = model.next_logprobs(ids[:, :3], model.initial_state(3))
    steps = [logprobs]
    for t in range(3, 11):
        logprobs, state = model.next_logprobs(ids[:, t:t + 1], state)
        steps.append(logprobs)
    assert (torch.stack(steps, 1) - full[:, 2:]).abs().max() < 1e-5
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 3) % V
    assert torch.equal(model(changed)[0][:, :7], model(ids)[0][:, :7])
    # select_state reorders rows
    _, state = model(ids[:, :5])
    picked = model.select_state(state, torch.tensor([2, 0]))
    assert torch.allclose(model(ids[[2, 0], 5:], picked)[0], model(ids[[2, 0]])[0][:, 5:], atol=1e-6)
    save_model_dir(tmp_path / "m", *model.to_state())
    loaded, _ = load_model(tmp_path / "m")
    assert torch.equal(loaded.score(ids), model.score(ids))
    assert loaded.bos_id == 1 and loaded.context_length is None


def test_feedforward_uses_only_its_window():
    m = models()[3]
    ids = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(3))
    other = ids.clone()
    other[0, :5] = (other[0, :5] + 1) % V
    # position 8 predicts from ids[6..8]: earlier tokens do not matter
    assert torch.equal(m(ids)[0][0, 8], m(other)[0][0, 8])


def test_bad_settings():
    with pytest.raises(ConfigError, match="cell"):
        RecurrentLM(V, cell="transformer")
    with pytest.raises(ConfigError, match="tied embeddings"):
        RecurrentLM(V, d_embed=10, d_hidden=12, tie_embeddings=True)
    with pytest.raises(ConfigError, match="order"):
        FeedForwardLM(V, order=1)
