"""A draft model's KV cache kept in step with a growing context (the one catch-up tracker)."""

from __future__ import annotations

import numpy as np

from draftwise.backends.base import Backend, Feed


class DraftLM:
    """One sequence of a backend and the ids in its cache. A new context reuses the longest common
    prefix with what is cached (the accepted part of the last draft) and feeds the rest in one batch.

    grows_only: successive contexts extend each other (then the comparison starts where the last
    context ended); False where the caller rewrites a context's tail (re-tokenized text).
    seq: the backend's sequence this tracker owns (batched drafting: one DraftLM per sequence).
    """

    def __init__(self, backend: Backend, grows_only: bool = True, seq: int = 0):
        self.backend = backend
        self.grows_only = grows_only
        self.seq = seq
        self.cached: list[int] = []
        self._synced = 0  # the last context's first _synced ids equal cached[:_synced]

    def reset(self) -> None:
        self.backend.rollback_seq(self.seq, 0)
        self.cached = []
        self._synced = 0

    def prefill(self, ids: list[int]) -> None:
        """Feed all but the last id (its logits come with the first `logits_after`)."""
        self.reset()
        if len(ids) > 1:
            self.backend.forward_many([self.extend(ids[:-1])])

    def extend(self, ids: list[int]) -> Feed:
        """The feed appending committed ids (a prompt chunk, no logits); the caller runs it."""
        self.cached.extend(ids)
        self._synced = len(self.cached)
        return Feed(self.seq, list(ids), 0)

    def catch_up(self, ids: list[int]) -> Feed:
        """Cut the cache back to its common prefix with ids (non-empty) and return the feed of
        the rest (at least the last id), whose logits row is the token after ids."""
        lim = min(len(self.cached), len(ids) - 1)  # keep one id to feed: its logits are needed
        n = min(self._synced, lim) if self.grows_only else 0
        while n < lim and self.cached[n] == ids[n]:
            n += 1
        if n < len(self.cached):
            self.backend.rollback_seq(self.seq, n)
            del self.cached[n:]
        feed = ids[n:]
        self.cached.extend(feed)
        self._synced = len(ids)
        return Feed(self.seq, feed, 1)

    def push(self, token: int) -> Feed:
        """The feed appending one drafted token; its logits row is the token after it."""
        self.cached.append(token)
        return Feed(self.seq, [token], 1)

    def logits_after(self, ids: list[int]) -> np.ndarray:
        """Logits [V_draft] for the token after ids (non-empty); valid until the next forward."""
        return self.backend.forward_many([self.catch_up(ids)])[0][0]

    def step(self, token: int) -> np.ndarray:
        """Append one drafted token; logits [V_draft] after it, valid until the next forward."""
        return self.backend.forward_many([self.push(token)])[0][0]
