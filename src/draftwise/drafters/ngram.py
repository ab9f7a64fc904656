"""Prompt-lookup drafting: continue the longest suffix of the context that occurred before."""

from __future__ import annotations

import numpy as np

from draftwise.config import SamplingConfig
from draftwise.drafters.base import Draft, Drafter


class NgramDrafter(Drafter):
    """Longest suffix match of n_max..n_min tokens; proposes what followed its latest occurrence.

    An incremental index (n-gram -> position after its latest occurrence) keeps each round
    O(new tokens) instead of rescanning the context. q is None: a lookup has no distribution.
    """

    name = "ngram"
    replayable = True

    def __init__(self, n_max: int = 3, n_min: int = 1):
        if not 1 <= n_min <= n_max:
            raise ValueError(f"ngram sizes need 1 <= n_min <= n_max, got {n_min}..{n_max}")
        self.n_max, self.n_min = n_max, n_min
        self.reset()

    def reset(self) -> None:
        self._index: dict[int, dict[tuple[int, ...], int]] = {
            n: {} for n in range(self.n_min, self.n_max + 1)}
        self._indexed = 0  # n-grams ending at positions < this are indexed

    def _update(self, ctx: list[int]) -> None:
        if len(ctx) < self._indexed:
            self.reset()
        # Index n-grams that end before the last position: they have a continuation.
        for end in range(max(self._indexed, 1), len(ctx)):
            for n, idx in self._index.items():
                if end >= n:
                    idx[tuple(ctx[end - n:end])] = end
        self._indexed = max(self._indexed, len(ctx))

    def match(self, ctx: list[int], k: int) -> tuple[list[int], int]:
        """Continuation [<=k] of the longest matching suffix, and the match length (0 = none)."""
        self._update(ctx)
        for n in range(min(self.n_max, len(ctx)), self.n_min - 1, -1):
            start = self._index[n].get(tuple(ctx[-n:]))
            if start is not None:
                return ctx[start:start + k], n
        return [], 0

    def lookup(self, ctx: list[int], k: int) -> list[int]:
        return self.match(ctx, k)[0]

    def propose(self, ctx: list[int], k: int, sampling: SamplingConfig,
                rng: np.random.Generator) -> Draft:
        return Draft(self.lookup(ctx, k), None)
