"""What a `bench` sweep runs, validated on construction, and parsing of K ranges."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from draftwise.config import K_MAX
from draftwise.errors import DraftwiseError


def parse_k_range(spec: str | int | Sequence[int]) -> tuple[int, ...]:
    """'1-8', '1,2,4', '4' or [1, 2, 4] -> sorted unique K values, each in 1..K_MAX."""
    if isinstance(spec, int):
        ks = [spec]
    elif isinstance(spec, str):
        ks = []
        for part in spec.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise DraftwiseError(f"K range {spec!r} is invalid: use a range like 1-8 or a list "
                                     "like 1,2,4")
            lo, hi = int(m[1]), int(m[2] or m[1])
            if lo > hi:
                raise DraftwiseError(f"K range {spec!r} is invalid: {lo} > {hi}")
            ks.extend(range(lo, hi + 1))
    else:
        ks = [int(k) for k in spec]
    if not ks:
        raise DraftwiseError("K range is empty: give at least one K, e.g. 1-8")
    bad = [k for k in ks if not 1 <= k <= K_MAX]
    if bad:
        raise DraftwiseError(f"K range is invalid: K must be between 1 and {K_MAX}, got {bad[0]}")
    return tuple(sorted(set(ks)))


@dataclass(frozen=True)
class BenchOptions:
    """A sweep: AR plus every draft x K (plus adaptive K per draft), at each temperature."""

    target: str
    drafts: tuple[str, ...] = ("ngram",)
    ks: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    adaptive: bool = True
    temperatures: tuple[float, ...] = (0.0,)
    max_tokens: int = 128
    repeats: int = 3
    p_min: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.drafts:
            raise DraftwiseError("give at least one draft (a model name, ngram or ngram+MODEL)")
        if any(d.lower() in ("", "none") for d in self.drafts):
            raise DraftwiseError("`none` is not a draft: autoregressive decoding is always run")
        parse_k_range(self.ks)
        if not self.temperatures or any(not t >= 0 for t in self.temperatures):
            raise DraftwiseError(f"temperatures must be >= 0, got {list(self.temperatures)}")
        if self.max_tokens < 2:
            raise DraftwiseError(f"max_tokens must be >= 2, got {self.max_tokens}")
        if self.repeats < 1:
            raise DraftwiseError(f"repeats must be >= 1, got {self.repeats}")
        if not 0 <= self.p_min < 1:
            raise DraftwiseError(f"p_min must be in [0, 1), got {self.p_min}")

    @property
    def k_max(self) -> int:
        return max(self.ks)
