"""Configuration dataclasses, validated on construction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from draftwise.acceptance import Acceptance, parse_accept
from draftwise.errors import DraftwiseError

K_MAX = 32


def check_k(k: int, name: str = "K") -> int:
    """The one check of a draft length: 1..K_MAX."""
    if not 1 <= k <= K_MAX:
        raise DraftwiseError(f"{name} must be between 1 and {K_MAX}, got {k}")
    return k


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
    for k in ks:
        check_k(k)
    return tuple(sorted(set(ks)))


@dataclass(frozen=True)
class SamplingConfig:
    """How a token is chosen from logits; applied identically to p (target) and q (draft).

    temperature 0 means greedy (argmax); top_k 0 and top_p 1.0 mean "off".
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise DraftwiseError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DraftwiseError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise DraftwiseError(f"top_k must be >= 0 (0 = off), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class SpecConfig:
    """Speculation settings: a fixed K, or adaptive K up to k_max.

    p_min: the draft stops proposing once its own top probability falls below this (0 = never).
    accept: `exact` (lossless) or a lossy mode (see draftwise.acceptance); parsed into `rule`.
    """

    k: int = 3
    adaptive: bool = False
    k_max: int = 8
    p_min: float = 0.0
    accept: str = "exact"
    rule: Acceptance = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_k(self.k)
        check_k(self.k_max, "k_max")
        if not 0 <= self.p_min < 1:
            raise DraftwiseError(f"p_min must be in [0, 1), got {self.p_min}")
        object.__setattr__(self, "rule", parse_accept(self.accept))  # frozen: set once, here

    @classmethod
    def parse(cls, k: str, p_min: float = 0.0, accept: str = "exact") -> SpecConfig:
        """From the command line's -k: a number, or `auto` (adaptive K)."""
        if k == "auto":
            return cls(adaptive=True, p_min=p_min, accept=accept)
        if not k.isdigit():
            raise DraftwiseError(f"-k takes a number from 1 to {K_MAX} or 'auto', got {k!r}")
        return cls(k=int(k), p_min=p_min, accept=accept)


@dataclass(frozen=True)
class GenerateConfig:
    """One generation request."""

    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise DraftwiseError(f"max_tokens must be >= 1, got {self.max_tokens}")
