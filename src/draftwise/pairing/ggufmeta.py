"""Read a GGUF file's metadata and tensor shapes without touching the tensor data (its extent
is checked against the file size, so that a truncated file fails here).

gguf.GGUFReader builds a numpy view per array element, which takes 10-15 s for a 150k-token
vocabulary with its merges; this parser walks the same layout (format constants from the `gguf`
package) with `struct` on a memory map and returns in well under a second.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from draftwise.errors import DraftwiseError

SCALAR_FORMATS = {  # struct formats of GGUF scalar value types
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
# String arrays that are read (others, like the merges, are skipped).
_WANTED_STRINGS = {"tokenizer.ggml.tokens"}


@dataclass
class GGUFMeta:
    """kv: metadata key -> value (arrays as lists or numpy arrays); tensors: name -> shape in
    ggml order (fastest dimension first)."""

    kv: dict = field(default_factory=dict)
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.kv.get(key, default)

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.tensors.values())


class _Cursor:
    def __init__(self, buf, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def corrupt(self, what: str) -> DraftwiseError:
        return DraftwiseError(f"{self.path} is truncated or corrupt ({what})")

    def unpack(self, fmt: str):
        try:
            v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        except struct.error:
            raise self.corrupt("the header ends early") from None
        self.pos += struct.calcsize(fmt)
        return v

    def string(self, keep: bool = True) -> str | None:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise self.corrupt("a string runs past the end")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", "replace") if keep else None
        self.pos += n
        return s

    def value(self, vtype: int, key: str):
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            etype, n = self.unpack("<I"), self.unpack("<Q")
            if etype == GGUFValueType.STRING:
                keep = key in _WANTED_STRINGS
                out = [self.string(keep) for _ in range(n)]
                return out if keep else None
            if etype == GGUFValueType.ARRAY:
                return [self.value(GGUFValueType.ARRAY, key) for _ in range(n)]
            fmt = _fmt(etype, self.path)
            size = struct.calcsize(fmt) * n
            if self.pos + size > len(self.buf):
                raise self.corrupt("an array runs past the end")
            arr = np.frombuffer(self.buf, dtype=np.dtype(fmt), count=n, offset=self.pos).copy()
            self.pos += size
            return arr
        return self.unpack(_fmt(vtype, self.path))


def _fmt(vtype: int, path: str) -> str:
    try:
        return SCALAR_FORMATS[GGUFValueType(vtype)]
    except (ValueError, KeyError):
        raise DraftwiseError(f"{path} is corrupt: unknown GGUF value type {vtype}") from None


def read_gguf_meta(path: str | Path) -> GGUFMeta:
    """Parse the header of a little-endian GGUF v2/v3 file. Raises DraftwiseError with one line."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            if Path(path).stat().st_size < 24:
                raise DraftwiseError(f"{path} is not a GGUF file (only "
                                     f"{Path(path).stat().st_size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, memoryview(mm) as mv:
                return _parse(mv, path)
    except OSError as e:
        raise DraftwiseError(f"cannot read {path}: {e.strerror or e}") from None


def _parse(buf, path: str) -> GGUFMeta:
    c = _Cursor(buf, path)
    if c.unpack("<I") != GGUF_MAGIC:
        raise DraftwiseError(f"{path} is not a GGUF file (bad magic number)")
    version = c.unpack("<I")
    if version not in (2, 3):
        raise DraftwiseError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
    meta = GGUFMeta()
    for _ in range(n_kv):
        key = c.string()
        meta.kv[key] = c.value(c.unpack("<I"), key)
    data_end = 0  # bytes the tensor data needs past its start
    for _ in range(n_tensors):
        name = c.string()
        dims = tuple(c.unpack("<Q") for _ in range(c.unpack("<I")))
        gtype, offset = c.unpack("<I"), c.unpack("<Q")
        meta.tensors[name] = dims
        data_end = max(data_end, offset + _nbytes(dims, gtype, name, path))
    align = int(meta.kv.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
    need = -(-c.pos // align) * align + data_end if n_tensors else c.pos
    if need > len(buf):
        raise DraftwiseError(f"{path} is truncated: its tensors need {need:,} bytes but the file "
                             f"has {len(buf):,}; download or copy it again")
    return meta


def tensor_nbytes(dims, gtype: int) -> int:
    """Bytes of one tensor's data: whole blocks of its ggml type (dims in ggml order)."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(gtype)]
    return int(np.prod(dims, dtype=np.uint64)) // block * size


def _nbytes(dims: tuple[int, ...], gtype: int, name: str, path: str) -> int:
    try:
        return tensor_nbytes(dims, gtype)
    except (ValueError, KeyError):
        raise DraftwiseError(f"{path} is corrupt: tensor {name} has unknown ggml type {gtype}") \
            from None
