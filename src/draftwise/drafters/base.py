"""The drafter interface: propose up to K tokens (with q when sampling), learn what was kept."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from draftwise.backends.base import Backend
from draftwise.config import SamplingConfig


@dataclass
class Draft:
    """tokens [k] in the target's ids; q [k, V_target] draft probabilities, or None (one-hot)."""

    tokens: list[int] = field(default_factory=list)
    q: np.ndarray | None = None


class Drafter(ABC):
    """Proposes continuations of the committed context `ctx` (target token ids, prompt included).

    Per generation the engine calls `begin(ctx)` once, then per round `propose` and `feedback`;
    between calls ctx only grows. Every method but `propose` has a no-op default.
    """

    name: str = "drafter"
    # Whether `advise` can predict this drafter from teacher-forced logits of `model_backend()`
    # over the target's token ids (and its `lookup`): same-vocabulary models and n-gram lookup.
    replayable: bool = False

    @property
    def forward_seconds(self) -> float:
        """Seconds spent inside the draft model's forward calls so far (0 without a model)."""
        backend = self.model_backend()
        return backend.forward_seconds if backend is not None else 0.0

    def model_backend(self) -> Backend | None:
        """The draft language model, or None (n-gram lookup)."""
        return None

    def reset(self) -> None:  # noqa: B027
        """Forget all state (a new prompt)."""

    def begin(self, ctx: list[int]) -> None:
        """A generation starts from ctx (the prompt): reset, and prefill a model's cache."""
        self.reset()

    @abstractmethod
    def propose(self, ctx: list[int], k: int, sampling: SamplingConfig,
                rng: np.random.Generator) -> Draft: ...

    def lookup(self, ctx: list[int], k: int) -> list[int] | None:
        """Tokens [<= k] this drafter proposes without a model forward (n-gram lookup), or None
        when a model would draft. Stateful like `propose`: follow it with `feedback`."""
        return None

    def feedback(self, n_drafted: int, n_accepted: int) -> None:  # noqa: B027
        """Told after every verification how many of the proposed tokens the target kept."""

    def close(self) -> None:
        """Free native resources."""
        backend = self.model_backend()
        if backend is not None:
            backend.close()
