"""The run directory <cache>/distill/NAME/ and atomic writes into it.

Every file a stage produces is written to a temporary name and renamed into place, and a stage
is done when its `done.json` exists, so a killed run leaves either a finished file or none.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from draftwise.files import write_json
from draftwise.models.store import cache_dir

STAGES = ("base", "gen", "score", "train", "export", "eval")


def distill_root() -> Path:
    return cache_dir() / "distill"


def read_json(path: Path):
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class RunDir:
    """Paths of one run: <cache>/distill/NAME/{options.json, base.gguf, gen/, score/, train/,
    export/, eval/, timings.json}."""

    path: Path

    @classmethod
    def for_name(cls, name: str) -> RunDir:
        return cls(distill_root() / name)

    def stage(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def done(self, stage: str) -> Path:
        return self.path / stage / "done.json"

    def is_done(self, stage: str) -> bool:
        return self.done(stage).is_file()

    def mark_done(self, stage: str, info: dict) -> None:
        write_json(self.done(stage), info)

    @property
    def options_file(self) -> Path:
        return self.path / "options.json"

    @property
    def base_gguf(self) -> Path:
        return self.path / "base.gguf"

    def add_time(self, stage: str, seconds: float) -> None:
        """Accumulate a stage's wall time over resumed runs (timings.json)."""
        f = self.path / "timings.json"
        t = read_json(f) if f.is_file() else {}
        t[stage] = round(t.get(stage, 0.0) + seconds, 2)
        write_json(f, t)

    def timings(self) -> dict[str, float]:
        f = self.path / "timings.json"
        return read_json(f) if f.is_file() else {}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextmanager
def timed(run: RunDir, stage: str) -> Iterator[None]:
    """Add the block's wall time to the stage's total, also when it is interrupted."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        run.add_time(stage, time.perf_counter() - t0)
