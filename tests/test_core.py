import json

import pytest
import torch

from lmlab.core import (
    ConfigError,
    LmlabError,
    Registry,
    atomic_write,
    check_choice,
    check_number,
    make_generator,
    resolve_device,
    resolve_dtype,
    seed_everything,
    write_json,
)


def test_error_message_has_problem_and_fix():
    err = ConfigError("k = -1 is out of range", "it must be positive")
    assert str(err) == "k = -1 is out of range — it must be positive"
    assert isinstance(err, ValueError) and isinstance(err, LmlabError)


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("new half-written")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_check_number_and_choice():
    assert check_number("k", 0.5, low=0, low_inclusive=False) == 0.5
    with pytest.raises(ConfigError, match="k = -1 is out of range"):
        check_number("k", -1, low=0, low_inclusive=False)
    with pytest.raises(ConfigError, match="must be an integer"):
        check_number("n", 1.5, integer=True)
    with pytest.raises(ConfigError, match="must be finite"):
        check_number("x", float("nan"))
    with pytest.raises(ConfigError, match="choose one of: a, b"):
        check_choice("mode", "c", ["a", "b"])


def test_registry_suggests_close_names():
    reg: Registry[int] = Registry("widget")
    reg.register("unigram", 1)
    with pytest.raises(ConfigError, match="did you mean unigram"):
        reg.get("unigam")


def test_seeding_reproduces_torch_draws():
    seed_everything(3)
    a = torch.rand(4)
    seed_everything(3)
    assert torch.equal(a, torch.rand(4))
    g1, g2 = make_generator(7), make_generator(7)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("float8")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu:0")
