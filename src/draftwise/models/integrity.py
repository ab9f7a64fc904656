"""Is a model file still the file that was pulled or made? sha256 records and per-model locks.

`pull` and `quantize` record each file's sha256 with its size and mtime in
`<dir>/.integrity/<file>.json`. Loading a model (`check`) compares the file's size and mtime with
the record, a stat, and re-hashes only when they changed; a catalog file is compared with the
catalog's sha256 even without a record. `<dir>/.integrity/<file>.lock` is the lock that keeps two
pulls (or quantizes) of one file apart (`model_lock`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from draftwise.errors import DraftwiseError
from draftwise.files import write_json

STATE_DIR = ".integrity"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def record_path(path: Path) -> Path:
    """Where the record of `path` (its real file, links followed) lives."""
    p = Path(path).resolve()
    return p.parent / STATE_DIR / f"{p.name}.json"


def lock_path(path: Path) -> Path:
    p = Path(path).resolve()
    return p.parent / STATE_DIR / f"{p.name}.lock"


@dataclass(frozen=True)
class Record:
    """What a file was when it was pulled or made. fix: the command that makes it again."""

    sha256: str
    size: int
    mtime_ns: int
    fix: str

    def matches(self, st: os.stat_result) -> bool:
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


def read_record(path: Path) -> Record | None:
    """The record of `path`, or None if there is none (or it is unreadable: then it is re-made)."""
    try:
        raw = json.loads(record_path(path).read_text())
        return Record(str(raw["sha256"]), int(raw["size"]), int(raw["mtime_ns"]), str(raw["fix"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(path: Path, sha256: str, fix: str) -> Record:
    """Record `path` as it is now, with its known-good sha256 (temp file, then rename)."""
    st = Path(path).stat()
    rec = Record(sha256, st.st_size, st.st_mtime_ns, fix)
    write_json(record_path(path), rec.__dict__, indent=None)
    return rec


def forget(path: Path) -> None:
    record_path(path).unlink(missing_ok=True)


def _catalog_entry(path: Path):
    """The catalog entry whose downloaded file `path` is, or None."""
    from draftwise.models import catalog

    real = Path(path).resolve()
    for e in catalog.catalog().values():
        if e.path.resolve() == real:
            return e
    return None


class CorruptModel(DraftwiseError):
    """A model file that is not what was pulled or made; `why` says how it differs."""

    def __init__(self, path: Path, why: str, fix: str):
        super().__init__(f"{path} is corrupt ({why}); {fix}, or check all models with "
                         "`draftwise models verify`")
        self.why = why


def check(path: str | Path, *, rehash: bool = False) -> str:
    """Raise DraftwiseError if the file at `path` differs from its record or catalog entry.

    Cheap (one stat) when the file's size and mtime equal the record's; otherwise, or with
    rehash=True, the file is hashed and the record renewed if the hash is still the good one.
    Returns 'unchanged' (stat only), 'hashed' (sha256 verified now) or 'unrecorded' (not a
    catalog file and no record: nothing to compare with).
    """
    p = Path(path)
    st = p.stat()
    rec = read_record(p)
    e = _catalog_entry(p)
    if e is not None:
        want, fix = e.sha256, f"run `draftwise models pull {e.name}` to download it again"
        if st.st_size != e.size:
            raise CorruptModel(p, f"{st.st_size:,} bytes instead of {e.size:,}", fix)
    elif rec is not None:
        want, fix = rec.sha256, rec.fix
    else:
        return "unrecorded"
    if rec is not None and rec.sha256 == want and rec.matches(st) and not rehash:
        return "unchanged"
    try:
        got = sha256_file(p)
    except OSError as err:
        raise DraftwiseError(f"cannot read {p}: {err.strerror or err}") from None
    if got != want:
        raise CorruptModel(p, "its sha256 differs from the catalog's" if e is not None else
                           "its sha256 differs from the one recorded when it was made", fix)
    try:
        write_record(p, got, fix)
    except OSError:  # a read-only models directory: hashed again next time, still correct
        pass
    return "hashed"


@contextmanager
def model_lock(path: Path, on_wait=None) -> Iterator[None]:
    """Hold the lock of model file `path` (blocking); on_wait(str) is told when another process
    holds it. The kernel drops the lock if the holder dies, so a killed pull never blocks."""
    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"waiting for another process working on {Path(path).name}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def is_locked(path: Path) -> bool:
    """True if a live process holds the lock of model file `path`."""
    lp = lock_path(path)
    if not lp.exists():
        return False
    fd = os.open(lp, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
