"""Configuration dataclasses, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from draftwise.errors import DraftwiseError

K_MAX = 32


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
    """

    k: int = 3
    adaptive: bool = False
    k_max: int = 8
    p_min: float = 0.0

    def __post_init__(self) -> None:
        for name, v in (("K", self.k), ("k_max", self.k_max)):
            if not 1 <= v <= K_MAX:
                raise DraftwiseError(f"{name} must be between 1 and {K_MAX}, got {v}")
        if not 0 <= self.p_min < 1:
            raise DraftwiseError(f"p_min must be in [0, 1), got {self.p_min}")


@dataclass(frozen=True)
class GenerateConfig:
    """One generation request."""

    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise DraftwiseError(f"max_tokens must be >= 1, got {self.max_tokens}")
