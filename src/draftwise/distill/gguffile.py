"""Byte-level GGUF reading and rewriting: keep metadata and untouched tensors exactly.

`GGUFFile` records where each metadata entry and each tensor's data lie in the file. `write_gguf`
writes a new file from it: metadata entries copied byte for byte (or a few scalars replaced),
tensors either copied from the source byte for byte or given as new data. `cut_layers` uses it to
keep N of the blocks (`--layers`), export to write trained tensors.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType

from draftwise.errors import DraftwiseError
from draftwise.pairing.ggufmeta import SCALAR_FORMATS, read_gguf_meta, tensor_nbytes

_COPY_CHUNK = 16 << 20


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: shape in ggml order (fastest dimension first), ggml type, absolute offset."""

    name: str
    shape: tuple[int, ...]
    type: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class NewTensor:
    """A tensor to write: `data` (raw bytes of `type`) or, when None, copied from `src` (a name in
    the source file) byte for byte."""

    name: str
    shape: tuple[int, ...]
    type: int
    data: bytes | np.ndarray | None = None
    src: str | None = None

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.type)


@dataclass
class GGUFFile:
    """A parsed GGUF file. kv: key -> (vtype, raw bytes of the whole entry); values: parsed
    metadata (pairing.ggufmeta); tensors in file order."""

    path: Path
    version: int
    kv: dict[str, tuple[int, bytes]]
    values: dict
    tensors: dict[str, TensorInfo]
    alignment: int

    @property
    def arch(self) -> str:
        return str(self.values.get("general.architecture", ""))

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def arch_key(self, key: str, default=None):
        """A `<arch>.<key>` metadata value, e.g. arch_key('block_count')."""
        return self.values.get(f"{self.arch}.{key}", default)

    @property
    def n_blocks(self) -> int:
        return int(self.arch_key("block_count", 0))

    def raw(self, name: str) -> np.ndarray:
        """A tensor's bytes [nbytes] as a read-only uint8 view of the file."""
        t = self.tensors[name]
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=t.offset, shape=(t.nbytes,))

    def array(self, name: str) -> np.ndarray:
        """A tensor dequantized to float32, numpy shape (reversed ggml shape: rows last-but-one)."""
        from gguf.quants import dequantize

        t = self.tensors[name]
        rows = self.raw(name).reshape(-1, t.nbytes // max(1, int(np.prod(t.shape[1:]))))
        try:
            out = dequantize(rows, GGMLQuantizationType(t.type))
        except NotImplementedError:
            raise DraftwiseError(f"{self.path.name}: tensor {name} has type "
                                 f"{GGMLQuantizationType(t.type).name}, which the gguf package "
                                 "cannot dequantize; use a file with another quantization") \
                from None
        return np.asarray(out, dtype=np.float32).reshape(tuple(reversed(t.shape)))


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header, keeping each metadata entry's raw bytes and tensor offsets."""
    path = Path(path)
    values = read_gguf_meta(path).kv  # validates the file and decodes the values we need
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        pos = 0

        def unpack(fmt: str):
            nonlocal pos
            v = struct.unpack_from(fmt, mm, pos)[0]
            pos += struct.calcsize(fmt)
            return v

        def skip_string() -> str:
            nonlocal pos
            n = unpack("<Q")
            s = mm[pos:pos + n].decode("utf-8", "replace")
            pos += n
            return s

        def skip_value(vtype: int) -> None:
            nonlocal pos
            if vtype == GGUFValueType.STRING:
                skip_string()
            elif vtype == GGUFValueType.ARRAY:
                etype, n = unpack("<I"), unpack("<Q")
                if etype in (GGUFValueType.STRING, GGUFValueType.ARRAY):
                    for _ in range(n):
                        skip_value(etype)
                else:
                    pos += struct.calcsize(SCALAR_FORMATS[GGUFValueType(etype)]) * n
            else:
                pos += struct.calcsize(SCALAR_FORMATS[GGUFValueType(vtype)])

        if unpack("<I") != GGUF_MAGIC:
            raise DraftwiseError(f"{path} is not a GGUF file")
        version, n_tensors, n_kv = unpack("<I"), unpack("<Q"), unpack("<Q")
        kv: dict[str, tuple[int, bytes]] = {}
        for _ in range(n_kv):
            start = pos
            key = skip_string()
            vtype = unpack("<I")
            skip_value(vtype)
            kv[key] = (vtype, bytes(mm[start:pos]))
        infos = []
        for _ in range(n_tensors):
            name = skip_string()
            shape = tuple(unpack("<Q") for _ in range(unpack("<I")))
            infos.append((name, shape, unpack("<I"), unpack("<Q")))
        align = int(values.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
        data_start = -(-pos // align) * align
    tensors = {n: TensorInfo(n, s, t, data_start + off, tensor_nbytes(s, t))
               for n, s, t, off in infos}
    return GGUFFile(path, version, kv, values, tensors, align)


def _kv_entry(key: str, vtype: int, value) -> bytes:
    """A scalar or numeric-array metadata entry in GGUF encoding."""
    k = key.encode()
    head = struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype)
    if vtype == GGUFValueType.ARRAY:
        etype, arr = value
        fmt = SCALAR_FORMATS[GGUFValueType(etype)]
        return head + struct.pack("<IQ", etype, len(arr)) + np.asarray(arr).astype(
            np.dtype(fmt)).tobytes()
    if vtype == GGUFValueType.STRING:
        s = str(value).encode()
        return head + struct.pack("<Q", len(s)) + s
    return head + struct.pack(SCALAR_FORMATS[GGUFValueType(vtype)], value)


def gguf_size(src: GGUFFile, tensors: Sequence[NewTensor], kv_set: dict | None = None) -> int:
    """The size in bytes of the file write_gguf would write."""
    return _layout(src, tensors, kv_set or {})[1]


def _layout(src: GGUFFile, tensors: Sequence[NewTensor], kv_set: dict) -> tuple[bytes, int, list]:
    kv = dict(src.kv)
    for key, (vtype, value) in kv_set.items():
        kv[key] = (vtype, _kv_entry(key, vtype, value))
    head = struct.pack("<IIQQ", GGUF_MAGIC, src.version, len(tensors), len(kv))
    head += b"".join(raw for _, raw in kv.values())
    offsets, off = [], 0
    for t in tensors:
        offsets.append(off)
        off += -(-t.nbytes // src.alignment) * src.alignment
    for t, o in zip(tensors, offsets):
        name = t.name.encode()
        head += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(t.shape))
        head += struct.pack(f"<{len(t.shape)}Q", *t.shape) + struct.pack("<IQ", t.type, o)
    head += b"\0" * (-len(head) % src.alignment)
    return head, len(head) + off, offsets


def write_gguf(src: GGUFFile, dst: Path, tensors: Sequence[NewTensor],
               kv_set: dict | None = None) -> Path:
    """Write a GGUF file: src's metadata (kv_set: key -> (vtype, value) replaces or adds scalar
    entries), then `tensors` in order. Written to a temporary file renamed into place; checks the
    free disk space first, and leaves nothing behind on any error."""
    head, total, _ = _layout(src, tensors, kv_set or {})
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    need_space(dst.parent, total, f"writing {dst.name}")
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.partial")  # what `models pull` cleans up
    try:
        with open(src.path, "rb") as fin, open(tmp, "wb") as f:
            f.write(head)
            for t in tensors:
                start = f.tell()
                if t.data is None:
                    s = src.tensors[t.src or t.name]
                    if s.nbytes != t.nbytes:
                        raise ValueError(f"{t.name}: copy of {s.name} has {s.nbytes} bytes, "
                                         f"expected {t.nbytes}")
                    fin.seek(s.offset)
                    left = s.nbytes
                    while left:
                        chunk = fin.read(min(left, _COPY_CHUNK))
                        f.write(chunk)
                        left -= len(chunk)
                else:
                    data = t.data.tobytes() if isinstance(t.data, np.ndarray) else bytes(t.data)
                    if len(data) != t.nbytes:
                        raise ValueError(f"{t.name}: {len(data)} bytes, expected {t.nbytes}")
                    f.write(data)
                f.write(b"\0" * (-(f.tell() - start) % src.alignment))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DraftwiseError(f"the disk filled up while writing {dst}; nothing was kept. "
                                 f"Free {total / 1e6:,.0f} MB there (or set DRAFTWISE_HOME)") \
                from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def need_space(where: Path, nbytes: int, what: str) -> None:
    """Raise one clear line when `where` has less than nbytes (+1% and 16 MB slack) free."""
    free = shutil.disk_usage(where).free
    if free < nbytes * 1.01 + (16 << 20):
        raise DraftwiseError(f"not enough disk space for {what}: it needs {nbytes / 1e6:,.0f} MB, "
                             f"{where} has {free / 1e6:,.0f} MB free; free some space or set "
                             "DRAFTWISE_HOME to another disk")


# -- --layers: keep N of the blocks -------------------------------------------------------------

LAYER_CHOICES = ("similar", "spread", "first-last", "first")


def choose_layers(n_total: int, n_keep: int, how: str = "spread") -> list[int]:
    """Which block indices to keep, ascending. spread: evenly spaced, always the first and last
    block; first-last: blocks 0..n-2 and the last; first: blocks 0..n-1. ("similar" needs the
    model and data: distill/layers.py.)"""
    if not 1 <= n_keep <= n_total:
        raise DraftwiseError(f"--layers must be between 1 and the draft's {n_total} blocks, "
                             f"got {n_keep}")
    if how == "first":
        return list(range(n_keep))
    if n_keep == 1:
        return [n_total - 1] if how == "first-last" else [0]
    if how == "first-last":
        return [*range(n_keep - 1), n_total - 1]
    if how != "spread":
        raise DraftwiseError(f"unknown layer choice {how!r}; choose from "
                             f"{', '.join(LAYER_CHOICES)}")
    return sorted({round(i * (n_total - 1) / (n_keep - 1)) for i in range(n_keep)})


def _block_of(name: str) -> tuple[int, str] | None:
    if not name.startswith("blk."):
        return None
    idx, _, rest = name[4:].partition(".")
    return (int(idx), rest) if idx.isdigit() else None


def cut_layers(src: GGUFFile, keep: Iterable[int], dst: Path) -> Path:
    """Write a copy of src with only the blocks `keep`, renumbered 0..n-1 (tensor names and
    `<arch>.block_count` rewritten; per-block metadata arrays cut alike). Tensors are copied
    byte for byte; everything else in the metadata is unchanged."""
    keep = list(keep)
    n_total = src.n_blocks
    new_index = {old: new for new, old in enumerate(keep)}
    tensors = []
    for name, t in src.tensors.items():
        blk = _block_of(name)
        if blk is None:
            tensors.append(NewTensor(name, t.shape, t.type, src=name))
        elif blk[0] in new_index:
            tensors.append(NewTensor(f"blk.{new_index[blk[0]]}.{blk[1]}", t.shape, t.type,
                                     src=name))
    key = f"{src.arch}.block_count"
    kv_set = {key: (src.kv[key][0], len(keep))}
    for k, (vtype, _) in src.kv.items():  # e.g. per-layer head counts in some architectures
        v = src.values.get(k)
        if k.startswith(f"{src.arch}.") and vtype == GGUFValueType.ARRAY and \
                isinstance(v, np.ndarray) and len(v) == n_total:
            etype = struct.unpack_from("<I", src.kv[k][1], 8 + len(k.encode()) + 4)[0]
            kv_set[k] = (vtype, (etype, v[keep]))
    return write_gguf(src, dst, tensors, kv_set)
