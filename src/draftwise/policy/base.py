"""Draft-length policies: how many tokens to draft in the next round."""

from __future__ import annotations

from abc import ABC, abstractmethod


class KPolicy(ABC):
    """Chooses K before each round and observes the round's outcome and costs."""

    def reset(self) -> None:  # noqa: B027
        """A new generation starts."""

    @abstractmethod
    def next_k(self) -> int: ...

    def observe(self, k: int, n_accepted: int, t_draft: float, t_target: float) -> None:  # noqa: B027
        """k drafted, n_accepted kept; seconds spent in draft and target forwards this round."""

    def state(self) -> dict | None:
        """What this policy learned that outlives a process (JSON-ready), or None."""
        return None

    def load_state(self, d: dict) -> None:  # noqa: B027
        """Start from state() of an earlier run."""


class FixedK(KPolicy):
    def __init__(self, k: int):
        self.k = k

    def next_k(self) -> int:
        return self.k
