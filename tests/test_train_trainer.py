"""The trainer: schedules by hand, losses, accumulation, early stopping, exact resume after a kill,
metrics and plot, DDP over gloo with 2 processes == 1 process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError, ModelError
from lmlab.data.loaders import ContiguousStream, RandomWindows
from lmlab.data.shards import TokenArray
from lmlab.models.config import TransformerConfig
from lmlab.models.recurrent import RecurrentLM
from lmlab.models.transformer import TransformerLM
from lmlab.train import CausalLM, ScheduledSampling, TrainConfig, lr_at, token_loss, train

REPO = Path(__file__).resolve().parents[1]
V = 23


def tokens(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    # a learnable stream: mostly "next = (prev * 3 + 1) mod V", some noise
    ids = [1]
    for _ in range(n - 1):
        ids.append((ids[-1] * 3 + 1) % V if rng.random() < 0.8 else int(rng.integers(V)))
    return TokenArray(ids, vocab_size=V)


def tiny_transformer(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=V, d_model=16, n_layers=1, n_heads=2,
                                                       context_length=16, dropout=dropout))


def test_schedules_by_hand():
    assert lr_at(0, schedule="constant", lr=1.0, warmup=3) == pytest.approx(0.25)
    assert lr_at(5, schedule="constant", lr=1.0, warmup=3) == 1.0
    cos = dict(schedule="cosine", lr=1.0, warmup=0, decay_steps=10, min_lr=0.1)
    assert lr_at(0, **cos) == 1.0 and lr_at(5, **cos) == pytest.approx(0.55) and lr_at(10, **cos) == 0.1
    assert lr_at(5, schedule="linear", lr=1.0, decay_steps=10, min_lr=0.0) == pytest.approx(0.5)
    assert lr_at(3, schedule="noam", lr=1.0, warmup=4) == 1.0
    assert lr_at(15, schedule="noam", lr=1.0, warmup=4) == pytest.approx(0.5)
    assert lr_at(1, schedule="noam", lr=1.0, warmup=4) == pytest.approx(0.5)
    step = dict(schedule="step", lr=1.0, decay_steps=4, decay_every=2, decay_factor=0.5)  # Zaremba: hold, then halve
    assert [lr_at(s, **step) for s in range(9)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125]


def test_token_loss_with_label_smoothing_and_mask_by_hand():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]])
    target = torch.tensor([[1, 0]])
    assert float(token_loss(logits[:, :1], target[:, :1])) == pytest.approx(np.log(4))
    # smoothing ε: (1-ε)·CE(target) + ε·mean over classes of CE
    lp = torch.log_softmax(logits[0, 1], -1)
    expected = 0.9 * -lp[0] + 0.1 * -lp.mean()
    assert float(token_loss(logits[:, 1:], target[:, 1:], label_smoothing=0.1)) == pytest.approx(float(expected))
    masked = token_loss(logits, target, mask=torch.tensor([[False, True]]))
    assert float(masked) == pytest.approx(float(-lp[0]))


def test_bad_training_settings():
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="exp")
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainConfig.from_dict({"stepz": 3})


class FixedSource:
    """The same global batch every step, cut into micro-batches by index."""

    def __init__(self, batch, parts):
        self.batch_, self.parts = batch, parts

    def batch(self, index, rank=0, world=1):
        k = index % self.parts
        size = self.batch_["input"].shape[0] // self.parts
        return {key: v[k * size:(k + 1) * size] for key, v in self.batch_.items()}


def test_accumulation_equals_one_big_batch(tmp_path, no_progress):
    batch = RandomWindows(tokens(), 8, 12, seed=1).batch(0)
    runs = []
    for parts in (1, 4):
        model = tiny_transformer()
        config = TrainConfig(steps=3, accumulate=parts, schedule="constant", lr=0.5, optimizer="sgd",
                             device="cpu", clip=None)
        train(model, CausalLM(), FixedSource(batch, parts), config, tmp_path / str(parts))
        runs.append(model)
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


class Killed(Exception):
    pass


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_exact_resume_after_a_kill_between_checkpoints(tmp_path, kind, no_progress):
    data = tokens()

    def setup():
        if kind == "transformer":
            model, source, objective = tiny_transformer(dropout=0.1), RandomWindows(data, 4, 12, seed=2), CausalLM()
        else:
            torch.manual_seed(0)
            model = RecurrentLM(V, cell="lstm", d_embed=8, d_hidden=8, n_layers=2, dropout=0.2)
            source, objective = ContiguousStream(data, 4, 10), CausalLM(carry_state=True)
        return model, source, objective

    config = TrainConfig(steps=9, checkpoint_every=3, warmup=2, lr=3e-3, device="cpu", accumulate=2)
    model, source, objective = setup()
    train(model, objective, source, config, tmp_path / "whole")

    def kill(step, loss):
        if step == 5:
            raise Killed

    model, source, objective = setup()
    with pytest.raises(Killed):
        train(model, objective, source, config, tmp_path / "killed", on_step=kill)
    model, source, objective = setup()  # a fresh process would rebuild everything
    train(model, objective, source, config, tmp_path / "killed", resume=True)
    whole, resumed = _losses(tmp_path / "whole"), _losses(tmp_path / "killed")
    assert [s for s, _ in resumed] == list(range(1, 10))
    assert resumed == whole  # bit-identical floats
    assert (tmp_path / "killed" / "metrics.png").stat().st_size > 1000


def test_resuming_another_models_run_is_refused(tmp_path, no_progress):
    config = TrainConfig(steps=2, device="cpu")
    train(tiny_transformer(), CausalLM(), RandomWindows(tokens(), 4, 12), config, tmp_path)
    other = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=V, d_model=16, n_layers=1, n_heads=2,
                                                        context_length=16))
    with pytest.raises(ModelError, match="another model"):
        train(other, CausalLM(), RandomWindows(tokens(), 4, 12), config, tmp_path, resume=True)


def test_training_learns_and_early_stopping_stops(tmp_path, no_progress):
    data = tokens()
    model = tiny_transformer()
    first = []
    evals = iter([1.0, 0.9, 0.95, 0.97, 0.5, 0.4])
    config = TrainConfig(steps=60, lr=1e-2, eval_every=5, patience=2, device="cpu", schedule="constant")
    result = train(model, CausalLM(), RandomWindows(data, 8, 12), config, tmp_path,
                   eval_fn=lambda m: next(evals), on_step=lambda s, loss: first.append(loss))
    assert result.stopped_early and result.steps == 20 and result.best_eval_loss == 0.9
    assert np.mean(first[-5:]) < np.mean(first[:3]) - 0.3


def test_scheduled_sampling_rises_and_matches_teacher_forcing_at_zero(no_progress):
    torch.manual_seed(0)
    model = RecurrentLM(V, cell="gru", d_embed=8, d_hidden=8, n_layers=1)
    batch = ContiguousStream(tokens(), 2, 6).batch(0)
    ss = ScheduledSampling(max_prob=0.5, ramp_steps=10)
    assert ss.sampling_prob(0) == 0 and ss.sampling_prob(5) == 0.25 and ss.sampling_prob(20) == 0.5
    a, _ = ss(model, {**batch, "step": 0})
    b, _ = CausalLM()(model, batch)
    assert torch.allclose(a, b, atol=1e-6)
    torch.manual_seed(1)
    c, _ = ss(model, {**batch, "step": 10})
    assert not torch.allclose(a, c)


def test_bf16_autocast_trains(tmp_path, no_progress):
    config = TrainConfig(steps=3, precision="bf16", device="cpu", optimizer="sgd", momentum=0.9, lr=0.1)
    result = train(tiny_transformer(), CausalLM(label_smoothing=0.1), RandomWindows(tokens(), 4, 12), config, tmp_path)
    assert np.isfinite(result.final_loss)


@pytest.mark.parametrize("preset", ["gpt2", "llama"])
def test_activation_checkpointing_gives_the_same_run_with_fewer_saved_tensors(tmp_path, preset, no_progress):
    def model():
        torch.manual_seed(0)
        return TransformerLM(TransformerConfig.from_preset(preset, vocab_size=V, d_model=16, n_layers=3, n_heads=2,
                                                           context_length=16, dropout=0.1))

    batch = RandomWindows(tokens(), 4, 12, seed=1).batch(0)
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, :3] = 0
    saved, grads = {}, {}
    for recompute in (False, True):
        lm = model().train()
        lm.activation_checkpointing = recompute
        sizes = {}

        def pack(t, sizes=sizes):
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            torch.manual_seed(3)  # the same dropout masks: the recomputation replays the RNG
            logits, _ = lm(batch["input"], attention_mask=mask)
        token_loss(logits, batch["target"]).backward()
        saved[recompute] = sum(sizes.values())
        grads[recompute] = [p.grad for p in lm.parameters()]
    assert saved[True] < 0.6 * saved[False]
    for a, b in zip(grads[False], grads[True], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    runs = []
    for recompute in (False, True):
        config = TrainConfig(steps=3, lr=1e-2, device="cpu", activation_checkpointing=recompute)
        train(model(), CausalLM(), RandomWindows(tokens(), 4, 12, seed=2), config, tmp_path / str(recompute))
        runs.append([loss for _, loss in _losses(tmp_path / str(recompute))])
    assert runs[0] == pytest.approx(runs[1], abs=1e-6)


def test_activation_checkpointing_refuses_what_it_cannot_do(tmp_path, no_progress):
    config = TrainConfig(steps=1, device="cpu", activation_checkpointing=True)
    with pytest.raises(ConfigError, match="transformer models"):
        train(RecurrentLM(V, cell="lstm", d_embed=8, d_hidden=8, n_layers=1), CausalLM(), RandomWindows(tokens(), 2, 8), config,
              tmp_path / "rnn")
    moe = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=V, d_model=16, n_layers=1, n_heads=2,
                                                      context_length=16, moe_experts=2, moe_top_k=1))
    with pytest.raises(ConfigError, match="mixture-of-experts"):
        train(moe, CausalLM(), RandomWindows(tokens(), 2, 8), config, tmp_path / "moe")


DDP_SCRIPT = """
import json, os, sys, torch
from lmlab.core.progress import set_quiet
from lmlab.data.loaders import RandomWindows
from lmlab.train import CausalLM, TrainConfig, train
sys.path.insert(0, {tests!r})
from test_train_trainer import tiny_transformer, tokens
set_quiet(True)
model = tiny_transformer()
config = TrainConfig(steps=4, lr=1e-2, device="cpu", distributed=sys.argv[2], warmup=1, checkpoint_every=2)
result = train(model, CausalLM(), RandomWindows(tokens(), 8, 12, seed=5), config, sys.argv[1])
state = result.final_state or model.to_state()
if int(os.environ["RANK"]) == 0:
    from lmlab.models import save_model_dir
    save_model_dir(sys.argv[1] + "/model", *state)
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(tmp_path, strategy):
    """gloo on CPU: DDP (and FSDP2 sharding) over 2 processes follow the 1-process loss curve."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(REPO / "tests")))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for procs in (1, 2):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                               "--master_port", str(29400 + procs + (10 if strategy == "fsdp" else 0)),
                               str(script), str(tmp_path / f"p{procs}"), strategy],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = _losses(tmp_path / "p1"), _losses(tmp_path / "p2")
    assert len(one) == len(two) == 4
    for (s1, l1), (s2, l2) in zip(one, two, strict=True):
        assert s1 == s2 and l1 == pytest.approx(l2, abs=1e-5)
    assert one[-1][1] < one[0][1]
    from lmlab.models import load_model

    a, _ = load_model(tmp_path / "p1" / "model")
    b, _ = load_model(tmp_path / "p2" / "model")
    ids = torch.randint(0, V, (2, 10))
    assert (a.score(ids) - b.score(ids)).abs().max() < 1e-4
