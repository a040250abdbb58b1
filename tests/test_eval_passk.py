"""pass@k against its closed form, and the sandbox stopping loops, memory bombs and the network."""

from __future__ import annotations

from math import comb

import pytest

from lmlab.core.errors import ConfigError
from lmlab.eval.passk import evaluate_samples, humaneval_program, pass_at_k
from lmlab.eval.sandbox import run_python


@pytest.mark.parametrize(("n", "c", "k"), [(10, 3, 1), (10, 3, 5), (20, 0, 3), (20, 20, 7), (200, 13, 100), (5, 2, 4)])
def test_pass_at_k_equals_the_combinatorial_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_special_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(4, 1, 4) == 1.0
    with pytest.raises(ConfigError):
        pass_at_k(3, 1, 5)


def test_sandbox_runs_ordinary_code_in_a_temporary_directory():
    ok = run_python("import os\nprint(os.getcwd())\nopen('scratch.txt', 'w').write('x')")
    assert ok.passed and "lmlab-sandbox-" in ok.stdout
    bad = run_python("assert 1 + 1 == 3")
    assert bad.status == "failed" and "AssertionError" in bad.stderr


def test_sandbox_stops_an_infinite_loop():
    result = run_python("while True:\n    pass\n", timeout=1.0)
    assert result.status == "timeout" and result.seconds < 5


def test_sandbox_stops_a_memory_bomb():
    result = run_python("x = []\nwhile True:\n    x.append(bytearray(10**7))\n", timeout=10.0, memory_mb=256)
    assert result.status == "memory"


def test_sandbox_blocks_the_network():
    program = ("import socket\n"
               "s = socket.create_connection(('93.184.216.34', 80), timeout=2)\n"
               "print('connected')\n")
    result = run_python(program, timeout=5.0)
    assert not result.passed and "connected" not in result.stdout
    prelude_only = run_python(program, timeout=5.0, isolate_network=False)
    assert prelude_only.status == "failed" and "network access is disabled" in prelude_only.stderr
    raw = run_python("import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('93.184.216.34', 80))\n"
                     "print('connected')\n", timeout=5.0)
    if raw.network_namespace:  # the prelude can be bypassed through _socket; the namespace cannot
        assert not raw.passed and "connected" not in raw.stdout


def test_evaluate_samples_humaneval_format(no_progress):
    problem = {"task_id": "t/0", "prompt": "def add(a, b):\n", "entry_point": "add",
               "test": "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n"}
    assert "check(add)" in humaneval_program(problem, "    return a + b\n")
    samples = [{"task_id": "t/0", "completion": "    return a + b\n"},
               {"task_id": "t/0", "completion": "    return a - b\n"},
               {"task_id": "t/0", "completion": "    while True: pass\n"}]
    result = evaluate_samples(samples, {"t/0": problem}, ks=(1, 2, 5), timeout=1.0)
    assert result["pass@1"] == pytest.approx(1 / 3)
    assert result["pass@2"] == pytest.approx(1 - comb(2, 2) / comb(3, 2))
    assert "pass@5" not in result  # fewer than 5 samples
    assert result["statuses"] == {"passed": 1, "failed": 1, "timeout": 1}
