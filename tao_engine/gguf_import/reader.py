"""Open a GGUF file, validate its layout and give typed access to its metadata and raw tensor bytes.

The header is parsed here rather than with `gguf.GGUFReader`: that reader wraps every string of a 49k-token
vocabulary in its own numpy view and needs ~5 s for SmolLM2, while this parser reads the same header in a fraction
of a second and can say exactly where a truncated file ends. Tensor payloads stay memory-mapped; nothing is copied
until a tensor is dequantized.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)  # v1 used 32-bit counts and is long gone from the wild
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS

# GGUF metadata value type id -> (struct format, numpy dtype) for the fixed-size scalars.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"),
    1: ("<b", "<i1"),
    2: ("<H", "<u2"),
    3: ("<h", "<i2"),
    4: ("<I", "<u4"),
    5: ("<i", "<i4"),
    6: ("<f", "<f4"),
    7: ("<?", "?"),
    10: ("<Q", "<u8"),
    11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_STRING, _ARRAY = 8, 9


class GGUFImportError(ValueError):
    """A GGUF file cannot be imported; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in the file. `dims` is GGUF order (fastest-varying first); `shape` is torch order."""

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.dims))

    @property
    def type_name(self) -> str:
        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"unknown ggml type {self.ggml_type}"


class _Cursor:
    """Bounds-checked little-endian reads over the mapped file; running off the end means a truncated file."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise GGUFImportError(
                f"{self.path}: truncated or corrupt GGUF file: reading {what} needs bytes {start}..{start + n} "
                f"but the file has {len(self.buf)} bytes. Re-download or re-convert the file."
            )
        self.pos += n
        return start

    def scalar(self, type_id: int, what: str) -> Any:
        fmt, _ = _SCALARS[type_id]
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar(10, what)
        start = self.take(n, what)
        try:
            return str(self.buf[start : start + n], "utf-8")
        except UnicodeDecodeError as e:
            raise GGUFImportError(f"{self.path}: {what} is not valid UTF-8 ({e}).") from None

    def value(self, type_id: int, what: str) -> Any:
        if type_id in _SCALARS:
            return self.scalar(type_id, what)
        if type_id == _STRING:
            return self.string(what)
        if type_id == _ARRAY:
            item_type, count = self.scalar(4, what), self.scalar(10, what)
            if item_type in _SCALARS:
                # Numeric arrays (token types, scores) in one vectorized read instead of a Python loop.
                dtype = np.dtype(_SCALARS[item_type][1])
                start = self.take(count * dtype.itemsize, what)
                return np.frombuffer(self.buf, dtype=dtype, count=count, offset=start).tolist()
            return [self.value(item_type, f"{what}[{i}]") for i in range(count)]
        raise GGUFImportError(f"{self.path}: {what} has unknown GGUF value type {type_id}; the file is corrupt.")


class GGUFFile:
    """A parsed GGUF file: `metadata` (key -> Python value), `tensors` (name -> TensorInfo, file order)."""

    def __init__(self, path: Path, version: int, metadata: dict[str, Any], tensors: dict[str, TensorInfo],
                 data: np.ndarray) -> None:
        self.path, self.version, self.metadata, self.tensors = path, version, metadata, tensors
        self._data = data  # [file_size] uint8, memory-mapped

    def error(self, message: str) -> GGUFImportError:
        return GGUFImportError(f"{self.path}: {message}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str, kind: type | tuple[type, ...] | None = None) -> Any:
        """The value under `key`; a clear error when it is missing or of the wrong kind."""
        if key not in self.metadata:
            raise self.error(
                f"required metadata key {key!r} is missing. The file was probably written by an incomplete "
                f"converter; re-convert it with llama.cpp's convert_hf_to_gguf.py."
            )
        value = self.metadata[key]
        # bool is an int subclass in Python, but a flag is never a valid count.
        if kind is not None and (not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind))):
            raise self.error(f"metadata key {key!r} should be {_kind_names(kind)}, got {value!r}.")
        return value

    def optional(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """The value under `key` checked like `require`, or `default` when the key is absent."""
        return self.require(key, kind) if key in self.metadata else default

    @property
    def architecture(self) -> str:
        return self.require("general.architecture", str)

    def arch_key(self, suffix: str) -> str:
        return f"{self.architecture}.{suffix}"

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's stored bytes as uint8 `[*shape[:-1], row_bytes]` (the layout `gguf.quants` expects)."""
        flat = self._data[info.offset : info.offset + info.nbytes]
        return flat.reshape(*info.shape[:-1], -1)


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _kinds(kind))


def _tensor_nbytes(path: Path, name: str, dims: tuple[int, ...], ggml_type: int) -> int:
    try:
        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise GGUFImportError(f"{path}: tensor {name!r} has unknown ggml type id {ggml_type}.") from None
    if dims[0] % block_size:
        raise GGUFImportError(
            f"{path}: tensor {name!r} of type {GGMLQuantizationType(ggml_type).name} has rows of {dims[0]} values, "
            f"not a multiple of its block size {block_size}; the file is corrupt."
        )
    return int(np.prod(dims, dtype=np.int64)) // block_size * type_size


def open_gguf(path: str | Path) -> GGUFFile:
    """Parse and validate the header of the GGUF file at `path`; raise GGUFImportError if it is not a usable GGUF."""
    path = Path(path)
    if not path.is_file():
        raise GGUFImportError(f"{path}: no such file (expected a .gguf model file).")
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _MAGIC:
        raise GGUFImportError(
            f"{path}: not a GGUF file (starts with {magic!r}, expected {_MAGIC!r}). Pass a llama.cpp .gguf file."
        )
    data = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(memoryview(data), path)
    cur.take(4, "the magic")
    version = cur.scalar(4, "the version")
    if version not in _SUPPORTED_VERSIONS:
        hint = " (a big-endian file?)" if version > 0xFFFF else ""
        raise GGUFImportError(f"{path}: unsupported GGUF version {version}{hint}; supported: {_SUPPORTED_VERSIONS}.")
    n_tensors, n_kv = cur.scalar(10, "the tensor count"), cur.scalar(10, "the metadata count")

    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        if key in metadata:
            raise GGUFImportError(f"{path}: metadata key {key!r} appears twice; the file is corrupt.")
        metadata[key] = cur.value(cur.scalar(4, f"the type of {key!r}"), f"metadata {key!r}")

    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    for i in range(n_tensors):
        name = cur.string(f"tensor name #{i}")
        n_dims = cur.scalar(4, f"the rank of tensor {name!r}")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise GGUFImportError(f"{path}: tensor {name!r} has rank {n_dims}; the file is corrupt.")
        dims = tuple(cur.scalar(10, f"the shape of tensor {name!r}") for _ in range(n_dims))
        infos.append((name, dims, cur.scalar(4, f"the type of tensor {name!r}"), cur.scalar(10, f"offset of {name!r}")))

    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFImportError(f"{path}: general.alignment must be a power of two, got {alignment!r}.")
    data_start = -(-cur.pos // alignment) * alignment

    tensors: dict[str, TensorInfo] = {}
    for name, dims, ggml_type, rel_offset in infos:
        if name in tensors:
            raise GGUFImportError(f"{path}: tensor {name!r} appears twice; the file is corrupt.")
        nbytes = _tensor_nbytes(path, name, dims, ggml_type)
        offset = data_start + rel_offset
        if offset + nbytes > size:
            raise GGUFImportError(
                f"{path}: truncated GGUF file: tensor {name!r} needs bytes {offset}..{offset + nbytes} but the file "
                f"has {size} bytes. Re-download or re-convert the file."
            )
        tensors[name] = TensorInfo(name, dims, ggml_type, offset, nbytes)
    return GGUFFile(path, version, metadata, tensors, data)
