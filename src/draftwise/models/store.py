"""Where models live: the user cache dir, or $DRAFTWISE_HOME."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The draftwise home (models/, hf/ conversions); created on first use."""
    env = os.environ.get("DRAFTWISE_HOME")
    if env:
        root = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("draftwise"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    d = cache_dir() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d
