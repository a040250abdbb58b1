"""A small reader of the GGUF container (llama.cpp's model file): header, metadata, tensor infos.

The file is memory-mapped with numpy; metadata values become Python values (numeric arrays
become numpy arrays), and each tensor's raw bytes are a zero-copy view into the map.
Block layouts and dequantisation live in ``ggml_quants``; ``GGUFFile.tensor`` joins the two.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError, ModelError
from .ggml_quants import GGML_TYPES, dequantize, nbytes, type_name

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types: id → (struct format, numpy dtype); 7 bool, 8 string, 9 array
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
            4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
            10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64)}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; ``offset`` is absolute in the file (data start included).

    ``shape`` is in GGUF order (fastest-varying dimension first, as ggml stores it).
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def type_name(self) -> str:
        """The ggml type's name (e.g. Q4_1); a clear error for types lmlab cannot read."""
        return type_name(self.ggml_type)

    @property
    def n_bytes(self) -> int:
        return nbytes(self.ggml_type, self.n_elements)


class GGUFFile:
    """A parsed GGUF file: ``version``, ``metadata`` (key → value), ``tensors`` (name → info)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"GGUF file not found: {self.path}", "pass the path of a .gguf file")
        self.data = np.memmap(self.path, dtype=np.uint8, mode="r")
        self._buf = memoryview(self.data)
        self._pos = 0
        try:
            self._parse()
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
            raise ModelError(f"{self.path} is not a valid GGUF file ({exc})") from None

    # --- parsing --------------------------------------------------------------------------
    def _unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self._buf, self._pos)[0]
        self._pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._unpack("<Q")
        raw = bytes(self._buf[self._pos:self._pos + n])
        if len(raw) != n:
            raise ValueError("string runs past the end of the file")
        self._pos += n
        return raw.decode("utf-8")

    def _value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            etype, n = self._unpack("<I"), self._unpack("<Q")
            if etype in _SCALARS and etype != 7:
                dtype = np.dtype(_SCALARS[etype][1]).newbyteorder("<")
                arr = np.frombuffer(self.data, dtype=dtype, count=n, offset=self._pos)
                self._pos += n * dtype.itemsize
                return arr
            return [self._value(etype) for _ in range(n)]
        if vtype not in _SCALARS:
            raise ValueError(f"unknown metadata value type {vtype}")
        return self._unpack(_SCALARS[vtype][0])

    def _parse(self) -> None:
        if bytes(self._buf[:4]) != MAGIC:
            raise ModelError(f"{self.path} is not a GGUF file (bad magic)", "pass a .gguf model file")
        self._pos = 4
        self.version = self._unpack("<I")
        if self.version not in (2, 3):
            raise ModelError(f"GGUF version {self.version} is not supported", "lmlab reads GGUF v2 and v3")
        n_tensors, n_kv = self._unpack("<Q"), self._unpack("<Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            self.metadata[key] = self._value(self._unpack("<I"))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._unpack("<I")
            shape = tuple(self._unpack("<Q") for _ in range(n_dims))
            infos.append((name, shape, self._unpack("<I"), self._unpack("<Q")))
        align = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        self.data_offset = -(-self._pos // align) * align
        self.tensors: dict[str, TensorInfo] = {
            name: TensorInfo(name, shape, ggml_type, self.data_offset + off)
            for name, shape, ggml_type, off in infos}

    # --- access ---------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        """A metadata value that must be present."""
        if key not in self.metadata:
            raise ModelError(f"{self.path.name} has no metadata key {key!r}")
        return self.metadata[key]

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The raw bytes of one tensor (a read-only uint8 view into the memory map)."""
        info = self.tensors.get(name)
        if info is None:
            raise ModelError(f"{self.path.name} has no tensor {name!r}")
        end = info.offset + info.n_bytes
        if end > len(self.data):
            raise ModelError(f"tensor {name} runs past the end of {self.path.name}", "the file is truncated")
        return self.data[info.offset:end]

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as float32, dequantised, in numpy (row-major) shape: GGUF's dims reversed."""
        info = self.tensors.get(name)
        if info is None:
            raise ModelError(f"{self.path.name} has no tensor {name!r}")
        return dequantize(self.tensor_bytes(name), info.ggml_type, info.n_elements).reshape(info.shape[::-1])


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open and parse a GGUF file (the tensor data stays on disk, memory-mapped)."""
    return GGUFFile(path)


_NUMPY_TYPES = {np.dtype(dt): vtype for vtype, (_, dt) in _SCALARS.items() if vtype != 7}


def _encode_value(value: Any) -> tuple[int, bytes]:
    """(GGUF value type, bytes) of a metadata value: str, bool, int (uint32, or int32/64 when it must be),
    float (float32), a numpy array (its own element type) or a list of one of those."""
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _STRING, struct.pack("<Q", len(raw)) + raw
    if isinstance(value, (bool, np.bool_)):
        return 7, struct.pack("<?", bool(value))
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 2**32:
            return 4, struct.pack("<I", v)
        return (5, struct.pack("<i", v)) if -2**31 <= v < 2**31 else (11, struct.pack("<q", v))
    if isinstance(value, (float, np.floating)):
        return 6, struct.pack("<f", float(value))
    if isinstance(value, np.ndarray):
        dtype = value.dtype.newbyteorder("=")
        if dtype not in _NUMPY_TYPES:
            raise ModelError(f"GGUF metadata cannot hold {value.dtype} arrays")
        return _ARRAY, struct.pack("<IQ", _NUMPY_TYPES[dtype], value.size) + value.astype(dtype.newbyteorder("<")).tobytes()
    if isinstance(value, (list, tuple)):
        parts = [_encode_value(v) for v in value]
        etype = parts[0][0] if parts else _STRING
        if any(p[0] != etype for p in parts):
            raise ModelError("a GGUF metadata array must hold values of one type")
        return _ARRAY, struct.pack("<IQ", etype, len(parts)) + b"".join(p[1] for p in parts)
    raise ModelError(f"GGUF metadata cannot hold a {type(value).__name__}")


def write_gguf(path: str | os.PathLike, metadata: dict[str, Any],
               tensors: list[tuple[str, tuple[int, ...], str, np.ndarray]]) -> Path:
    """Write a GGUF v3 file atomically: ``metadata`` (key → value) and ``tensors`` as
    (name, shape in PyTorch's row-major order, ggml type name, raw bytes as uint8)."""
    from ..core.io import atomic_path

    align = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    header = [MAGIC, struct.pack("<IQQ", 3, len(tensors), len(metadata))]
    for key, value in metadata.items():
        vtype, raw = _encode_value(value)
        name = key.encode("utf-8")
        header.append(struct.pack("<Q", len(name)) + name + struct.pack("<I", vtype) + raw)
    offset = 0
    for name, shape, ggml_type, raw in tensors:
        type_id = next(i for i, n in GGML_TYPES.items() if n == type_name(ggml_type))
        expect = nbytes(ggml_type, int(np.prod(shape, dtype=np.int64)))
        if raw.size != expect:
            raise ModelError(f"tensor {name} has {raw.size} bytes where {ggml_type} {shape} needs {expect}")
        encoded = name.encode("utf-8")
        dims = tuple(reversed(shape))  # GGUF lists the fastest-varying dimension first
        header.append(struct.pack("<Q", len(encoded)) + encoded + struct.pack("<I", len(dims))
                      + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", type_id, offset))
        offset += -(-raw.size // align) * align
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        head = b"".join(header)
        f.write(head + b"\0" * (-len(head) % align))
        for _, _, _, raw in tensors:
            f.write(raw.tobytes())
            f.write(b"\0" * (-raw.size % align))
    return out
