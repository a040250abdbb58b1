"""The GGUF reader: header, metadata and tensor table agree with the reference ``gguf`` package."""

import struct

import numpy as np
import pytest

from lmlab.core import ModelError
from lmlab.formats.gguf import read_gguf
from lmlab.tokenizers import smollm2_gguf


def _tiny_gguf(path, *, version=3, magic=b"GGUF"):
    """A hand-written GGUF: two metadata keys and one 2x3 F32 tensor."""
    def s(text):
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw
    out = magic + struct.pack("<IQQ", version, 1, 2)
    out += s("general.name") + struct.pack("<I", 8) + s("tiny")
    out += s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("é")
    out += s("w") + struct.pack("<I", 2) + struct.pack("<QQ", 3, 2) + struct.pack("<IQ", 0, 0)
    pad = (-len(out)) % 32
    out += b"\0" * pad + np.arange(6, dtype="<f4").tobytes()
    path.write_bytes(out)
    return path, len(out) - 24


def test_hand_written_file(tmp_path):
    path, data_offset = _tiny_gguf(tmp_path / "t.gguf")
    g = read_gguf(path)
    assert g.version == 3 and g.metadata == {"general.name": "tiny", "tokenizer.ggml.tokens": ["a", "é"]}
    info = g.tensors["w"]
    assert (info.shape, info.ggml_type, info.offset, info.n_bytes) == ((3, 2), 0, data_offset, 24)
    assert g.data_offset == data_offset
    assert np.array_equal(g.tensor_bytes("w").view("<f4"), np.arange(6, dtype="<f4"))


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="bad magic"):
        read_gguf(_tiny_gguf(tmp_path / "a.gguf", magic=b"GGUX")[0])
    with pytest.raises(ModelError, match="version 7"):
        read_gguf(_tiny_gguf(tmp_path / "b.gguf", version=7)[0])
    path, _ = _tiny_gguf(tmp_path / "c.gguf")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelError, match="not a valid GGUF"):
        read_gguf(path)


def test_smollm2_file_matches_reference_reader():
    gguf = pytest.importorskip("gguf")
    path = smollm2_gguf()
    ours, ref = read_gguf(path), gguf.GGUFReader(str(path))
    assert ours.metadata["tokenizer.ggml.model"] == "gpt2"
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == 49152
    assert len(ours.tensors) == len(ref.tensors)
    for t in ref.tensors:
        mine = ours.tensors[t.name]
        assert (mine.offset, mine.n_bytes, mine.ggml_type) == (t.data_offset, t.n_bytes, int(t.tensor_type))
        assert mine.shape == tuple(int(x) for x in t.shape)
    t = ref.tensors[0]
    assert np.array_equal(ours.tensor_bytes(t.name), np.asarray(t.data).view(np.uint8).reshape(-1))


def test_tensor_is_dequantised_in_numpy_shape(tmp_path):
    path, _ = _tiny_gguf(tmp_path / "t.gguf")
    g = read_gguf(path)
    assert g.tensors["w"].type_name == "F32"
    assert np.array_equal(g.tensor("w"), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_smollm2_quantised_tensor_matches_reference_dequantisation():
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as ref_dequantize

    ours, ref = read_gguf(smollm2_gguf()), gguf.GGUFReader(str(smollm2_gguf()))
    t = next(t for t in ref.tensors if t.name == "blk.0.attn_q.weight")
    want = ref_dequantize(np.asarray(t.data), t.tensor_type)
    got = ours.tensor(t.name)
    assert ours.tensors[t.name].type_name == t.tensor_type.name and got.shape == want.shape
    assert np.array_equal(got, want)
