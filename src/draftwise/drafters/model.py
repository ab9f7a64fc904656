"""A draft language model sharing the target's token ids, with its own KV cache."""

from __future__ import annotations

import numpy as np

from draftwise.backends.base import Backend
from draftwise.config import SamplingConfig
from draftwise.drafters.base import Draft, Drafter
from draftwise.drafters.lm import DraftLM
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
    replayable = True

    def __init__(self, backend: Backend, n_vocab_target: int | None = None, p_min: float = 0.0):
        self.lm = DraftLM(backend)
        self.n_vocab_target = n_vocab_target or backend.vocab.n_vocab
        self.p_min = p_min

    def model_backend(self) -> Backend:
        return self.lm.backend

    def reset(self) -> None:
        self.lm.reset()

    def begin(self, ctx: list[int]) -> None:
        """Prefill all but the last context token (done while the target prefills)."""
        self.lm.prefill(ctx)

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
        k = min(k, self.lm.backend.n_ctx - len(ctx))
        if k <= 0:
            return Draft()
        logits = self.lm.logits_after(ctx)
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
            logits = self.lm.step(d)
        return Draft(tokens, np.stack(qs) if qs else None)
