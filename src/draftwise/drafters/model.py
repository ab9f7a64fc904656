"""A draft language model with its own KV cache, catching up on what the target committed."""

from __future__ import annotations

import numpy as np

from draftwise.backends.base import Backend
from draftwise.config import SamplingConfig
from draftwise.drafters.base import Draft, Drafter
from draftwise.sampling import probs, sample


def top_prob(logits: np.ndarray) -> float:
    """max softmax(logits) for one row [V], without building the distribution."""
    return float(1.0 / np.exp(logits - logits.max()).sum())


class ModelDrafter(Drafter):
    """Drafts with a small LM sharing the target's token ids.

    The cache keeps the drafted tokens of the last round; on the next `propose` it is cut back to
    the longest prefix the target committed and fed the rest (accepted + bonus tokens) in one batch.
    """

    name = "model"

    def __init__(self, backend: Backend, n_vocab_target: int | None = None, p_min: float = 0.0):
        self.backend = backend
        self.n_vocab_target = n_vocab_target or backend.vocab.n_vocab
        self.p_min = p_min
        self.reset()

    @property
    def forward_seconds(self) -> float:  # type: ignore[override]
        return self.backend.forward_seconds

    def reset(self) -> None:
        self.backend.rollback(0)
        self._cached: list[int] = []
        self._synced = 0  # ctx[:_synced] is known to equal _cached[:_synced]

    def begin(self, ctx: list[int]) -> None:
        """Prefill all but the last context token (done while the target prefills)."""
        self.reset()
        if len(ctx) > 1:
            self.backend.forward(ctx[:-1], 0)
            self._cached = list(ctx[:-1])
            self._synced = len(ctx) - 1

    def _catch_up(self, ctx: list[int]) -> np.ndarray:
        """Cut the cache to its common prefix with ctx, feed the rest; logits [V] after ctx."""
        n = self._synced
        lim = min(len(self._cached), len(ctx) - 1)  # keep one token to feed: we need its logits
        while n < lim and self._cached[n] == ctx[n]:
            n += 1
        if n < len(self._cached):
            self.backend.rollback(n)
            del self._cached[n:]
        feed = ctx[n:]
        logits = self.backend.forward(feed, 1)[0]
        self._cached.extend(feed)
        self._synced = len(ctx)
        return logits

    def _fit(self, q: np.ndarray) -> np.ndarray:
        """q [V_draft] -> [V_target]: padding rows differ in width only; they carry no mass."""
        V = self.n_vocab_target
        if q.shape[0] == V:
            return q
        out = np.zeros(V, dtype=q.dtype)
        n = min(V, q.shape[0])
        out[:n] = q[:n]
        return out / out.sum()

    def propose(self, ctx: list[int], k: int, sampling: SamplingConfig,
                rng: np.random.Generator) -> Draft:
        room = self.backend.n_ctx - len(ctx)
        k = min(k, room)
        if k <= 0:
            return Draft()
        logits = self._catch_up(ctx)
        tokens: list[int] = []
        qs: list[np.ndarray] = []
        for i in range(k):
            if sampling.greedy:
                d = int(np.argmax(logits[:self.n_vocab_target]))
                if self.p_min and top_prob(logits) < self.p_min:
                    break
            else:
                q = self._fit(probs(logits[None], sampling)[0])
                if self.p_min and q.max() < self.p_min:
                    break
                d = sample(q, rng)
                qs.append(q)
            tokens.append(d)
            if i == k - 1:
                break
            logits = self.backend.forward([d], 1)[0]
            self._cached.append(d)
        return Draft(tokens, np.stack(qs) if qs else None)

    def close(self) -> None:
        self.backend.close()
