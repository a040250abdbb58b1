"""The balance experiment in small: without balancing the load collapses onto a few experts;
with the Switch loss or DeepSeek-V3's bias every expert stays within 2x of uniform."""

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "moe_balance.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("moe_balance", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """Tiny matrices run fastest, and without oversubscription on busy cores, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_balancing_keeps_every_expert_near_uniform_and_none_collapses(one_thread):
    bench = load_bench()
    unbalanced = bench.train_tiny(bench.CONFIGS["top1_none"], steps=120)
    assert unbalanced["max_over_uniform"] > 2.5 and unbalanced["idle_experts"] >= 3
    for name in ("top1_switch_loss", "top1_bias"):
        balanced = bench.train_tiny(bench.CONFIGS[name], steps=120)
        assert balanced["max_over_uniform"] < 2.0 and balanced["min_over_uniform"] > 0.4, name
        assert balanced["idle_experts"] == 0
