"""The drafter interface: propose up to K tokens (with q when sampling), learn what was kept."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from draftwise.backends.base import Backend, Feed
from draftwise.config import SamplingConfig


@dataclass
class Draft:
    """tokens [k] in the target's ids; q [k, V_target] draft probabilities, or None (one-hot)."""

    tokens: list[int] = field(default_factory=list)
    q: np.ndarray | None = None


@dataclass(frozen=True)
class DraftAsk:
    """Draft up to k tokens after ctx (committed target ids, cur last) for sequence seq."""

    seq: int
    ctx: list[int]
    k: int
    sampling: SamplingConfig
    rng: np.random.Generator


class Drafter(ABC):
    """Proposes continuations of the committed context `ctx` (target token ids, prompt included).

    Per generation the engine calls `begin(ctx)` once, then per round `propose` and `feedback`;
    between calls ctx only grows. Every method but `propose` has a no-op default.

    The engine drives these through the sequence API (`start`, `prefill_many`, `propose_many`,
    `feedback_at`); a drafter that keeps n_seq = 1 gets them as the seq 0 case of the above.
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

    # -- sequences (batched serving) -----------------------------------------------------------
    @property
    def n_seq(self) -> int:
        """Sequences this drafter keeps apart at once."""
        return 1

    def start(self, seq: int, ctx: list[int]) -> None:
        """Sequence seq starts a generation from ctx (the prompt)."""
        self.begin(ctx)

    def prefill_many(self, feeds: list[Feed]) -> None:  # noqa: B027
        """Prompt chunks (no logits) the target takes this iteration; `start` did it already
        unless a drafter prefills in chunks."""

    def propose_many(self, asks: list[DraftAsk]) -> list[Draft]:
        """One draft per ask (one sequence each). Default: one after another."""
        return [self.propose(a.ctx, a.k, a.sampling, a.rng) for a in asks]

    def feedback_at(self, seq: int, n_drafted: int, n_accepted: int) -> None:
        self.feedback(n_drafted, n_accepted)

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
