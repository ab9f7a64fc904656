"""Compare a speculative output with the autoregressive one, token by token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from draftwise.backends.base import Backend
    from draftwise.config import GenerateConfig


@dataclass(frozen=True)
class Divergence:
    """identical, or the first differing index and AR's top-2 logit margin there."""

    identical: bool
    index: int | None = None
    ar_margin: float | None = None

    def describe(self) -> str:
        if self.identical:
            return "identical to AR"
        gap = f"{self.ar_margin:.3f}" if self.ar_margin is not None else "?"
        return f"differs from AR at token {self.index} (AR top-2 logit margin {gap})"


def divergence(sd: Sequence[int], ar: Sequence[int], ar_margins: Sequence[float]) -> Divergence:
    """Where two greedy outputs of the same budget first differ (a length difference counts)."""
    n = next((i for i, (a, b) in enumerate(zip(sd, ar)) if a != b), min(len(sd), len(ar)))
    if n == len(sd) == len(ar):
        return Divergence(True)
    return Divergence(False, n, ar_margins[n] if n < len(ar_margins) else None)


def ar_reference(target: Backend, prompt: str | Sequence[int],
                 cfg: GenerateConfig) -> tuple[list[int], list[float]]:
    """AR's tokens [n] and its top-2 logit margin at each [n]: an extra run, never timed (tracing
    margins costs a partition over the vocabulary per round, kept out of measured runs)."""
    from draftwise.engine import Engine

    gen = Engine(target).generate(prompt, cfg, trace_margins=True)
    return gen.tokens, gen.margins
