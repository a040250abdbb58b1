"""``TrainConfig(compile=True)``: the trainer under ``torch.compile`` (inductor) gives the eager losses."""

import json
import shutil

import numpy as np
import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.data.loaders import RandomWindows
from lmlab.data.shards import TokenArray
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.train import CausalLM, TrainConfig, train

V = 19


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, no_progress):
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile's inductor backend needs a C++ compiler on the CPU")
    ids = np.random.default_rng(0).integers(0, V, 2000)
    source = RandomWindows(TokenArray(ids, vocab_size=V), 4, 16, seed=1)
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=V, d_model=16, n_layers=1,
                                                            n_heads=2, context_length=16))
        config = TrainConfig(steps=4, lr=1e-2, warmup=1, device="cpu", compile=compiled)
        run_dir = tmp_path / ("compiled" if compiled else "eager")
        train(model, CausalLM(), source, config, run_dir)
        runs[compiled] = (losses(run_dir), model.state_dict())
    (eager, eager_weights), (compiled, compiled_weights) = runs[False], runs[True]
    assert len(compiled) == 4
    assert compiled == pytest.approx(eager, abs=1e-4)
    # the checkpointed weights are the plain module's (no "_orig_mod." prefixes) and agree too
    assert compiled_weights.keys() == eager_weights.keys()
    assert all(torch.allclose(compiled_weights[k], eager_weights[k], atol=1e-4) for k in eager_weights)
