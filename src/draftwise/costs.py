"""Adaptive K's state kept between runs per (target, draft, backend, threads).

A new process then starts with this machine's round costs instead of spending its first rounds
measuring them (a 128-token reply has only ~40 rounds), and with the pairing's long-run
acceptance as the prior for a new prompt. Files live in <cache>/costs/<key>.json and are
replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from draftwise.adaptive import AdaptiveK
from draftwise.controller import KPolicy
from draftwise.errors import DraftwiseError


def cost_file(target: str, draft: str, backend: str, threads: int | None, dtype: str) -> Path:
    """The file for this pairing on this machine (names resolved to paths where they exist)."""
    from draftwise.models.catalog import resolve
    from draftwise.models.store import cache_dir

    def ident(name: str) -> str:
        try:
            ref = resolve(name).ref
        except DraftwiseError:  # ngram, ngram+MODEL: the name is the identity
            return name
        p = Path(ref)
        return f"{p.resolve()}:{p.stat().st_size}" if p.is_file() else ref

    key = json.dumps([ident(target), ident(draft), backend, threads, os.cpu_count(), dtype])
    return cache_dir() / "costs" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def load_costs(policy: KPolicy, path: Path) -> bool:
    """Give an adaptive policy the state saved at path; False if there is none (or unreadable)."""
    if not isinstance(policy, AdaptiveK) or not path.is_file():
        return False
    try:
        policy.load_state(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, IndexError):
        return False  # an old or damaged file: measure again
    return True


def save_costs(policy: KPolicy, path: Path) -> None:
    """Write an adaptive policy's state to path (temp file, then rename); nothing before any
    round cost was measured."""
    state = policy.state() if isinstance(policy, AdaptiveK) else None
    if not state or not state["t_round"]:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
