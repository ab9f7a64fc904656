"""A draft model's KV cache kept in step with a growing context (the one catch-up tracker)."""

from __future__ import annotations

import numpy as np

from draftwise.backends.base import Backend


class DraftLM:
    """A backend and the ids in its cache. A new context reuses the longest common prefix with
    what is cached (the accepted part of the last draft) and feeds the rest in one batch.

    grows_only: successive contexts extend each other (then the comparison starts where the last
    context ended); False where the caller rewrites a context's tail (re-tokenized text).
    """

    def __init__(self, backend: Backend, grows_only: bool = True):
        self.backend = backend
        self.grows_only = grows_only
        self.cached: list[int] = []
        self._synced = 0  # the last context's first _synced ids equal cached[:_synced]

    def reset(self) -> None:
        self.backend.rollback(0)
        self.cached = []
        self._synced = 0

    def prefill(self, ids: list[int]) -> None:
        """Feed all but the last id (its logits come with the first `logits_after`)."""
        self.reset()
        if len(ids) > 1:
            self.backend.forward(ids[:-1], 0)
            self.cached = list(ids[:-1])
            self._synced = len(self.cached)

    def logits_after(self, ids: list[int]) -> np.ndarray:
        """Logits [V_draft] for the token after ids (non-empty); valid until the next forward."""
        lim = min(len(self.cached), len(ids) - 1)  # keep one id to feed: its logits are needed
        n = min(self._synced, lim) if self.grows_only else 0
        while n < lim and self.cached[n] == ids[n]:
            n += 1
        if n < len(self.cached):
            self.backend.rollback(n)
            del self.cached[n:]
        feed = ids[n:]
        logits = self.backend.forward(feed, 1)[0]
        self.cached.extend(feed)
        self._synced = len(ids)
        return logits

    def step(self, token: int) -> np.ndarray:
        """Append one drafted token; logits [V_draft] after it, valid until the next forward."""
        logits = self.backend.forward([token], 1)[0]
        self.cached.append(token)
        return logits
