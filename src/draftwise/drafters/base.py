"""The drafter interface: propose up to K tokens (with q when sampling), learn what was kept."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from draftwise.config import SamplingConfig


@dataclass
class Draft:
    """tokens [k] in the target's ids; q [k, V_target] draft probabilities, or None (one-hot)."""

    tokens: list[int] = field(default_factory=list)
    q: np.ndarray | None = None


class Drafter(ABC):
    """Proposes continuations of the committed context `ctx` (target token ids, prompt included).

    The engine only ever appends to ctx between calls to `reset`.
    """

    name: str = "drafter"
    forward_seconds: float = 0.0  # time inside a draft model's forward calls

    def reset(self) -> None:  # noqa: B027
        """Forget all state (a new prompt)."""

    @abstractmethod
    def propose(self, ctx: list[int], k: int, sampling: SamplingConfig,
                rng: np.random.Generator) -> Draft: ...

    def feedback(self, n_drafted: int, n_accepted: int) -> None:  # noqa: B027
        """Told after every verification how many of the proposed tokens the target kept."""

    def close(self) -> None:  # noqa: B027
        """Free native resources."""
