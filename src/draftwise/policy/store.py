"""Adaptive K's state kept between runs per pairing and machine.

A new process then starts with this machine's round costs instead of spending its first rounds
measuring them (a 128-token reply has only ~40 rounds), and with the pairing's long-run
acceptance as the prior for a new prompt. Files live in <cache>/costs/<key>.json and are
replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from draftwise.files import write_json
from draftwise.models.store import cache_dir
from draftwise.policy.base import KPolicy


def cost_file(key: Sequence) -> Path:
    """The file for a JSON-able key (target and draft identity, backend, threads, machine)."""
    digest = hashlib.sha1(json.dumps(list(key)).encode()).hexdigest()[:16]
    return cache_dir() / "costs" / f"{digest}.json"


def load_costs(policy: KPolicy, path: Path) -> bool:
    """Give the policy the state saved at path; False if there is none (or it is unreadable)."""
    if not path.is_file():
        return False
    try:
        policy.load_state(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, IndexError):
        return False  # an old or damaged file: measure again
    return True


def save_costs(policy: KPolicy, path: Path) -> None:
    """Write the policy's state to path (temp file, then rename); nothing before any round
    cost was measured."""
    state = policy.state()
    if not state or not state.get("t_round"):
        return
    write_json(path, state, indent=None)
