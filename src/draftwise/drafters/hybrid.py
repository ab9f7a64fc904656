"""Hybrid drafting: an n-gram continuation from the context when it is confident, else the model.

Confident means the context's suffix matches an earlier n-gram of at least `min_match` tokens, the
lookup offers at least `min_tokens` tokens (or all K asked), and n-gram drafts have been accepted
well lately (a decayed acceptance rate >= `min_alpha`; it drifts back up while the model drafts, so
the lookup gets another chance). An n-gram round costs no draft forward; the model's cache catches
up on the skipped tokens in one batch at its next round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from draftwise.backends.base import Backend
from draftwise.config import SamplingConfig
from draftwise.drafters.base import Draft, Drafter
from draftwise.drafters.ngram import NgramDrafter

PREFIX = "ngram+"  # a draft named `ngram+MODEL` is MODEL with n-gram lookup in front


def hybrid_base(name: str) -> str | None:
    """The model name of a hybrid draft name (`ngram+qwen2.5-coder-0.5b`), else None."""
    if name.lower().startswith(PREFIX) and len(name) > len(PREFIX):
        return name[len(PREFIX):]
    return None


@dataclass(frozen=True)
class HybridParams:
    min_match: int = 2  # suffix tokens the lookup must match
    min_tokens: int = 2  # continuation tokens it must offer (fewer is fine when K is smaller)
    min_alpha: float = 0.5  # decayed acceptance rate of n-gram drafts needed to use them
    decay: float = 0.8  # per n-gram round
    recover: float = 0.05  # added to that rate (toward 1) per model round


class HybridDrafter(Drafter):
    """The n-gram lookup when confident, else the model; `source` tells which one ran last."""

    name = "hybrid"

    def __init__(self, model: Drafter, ngram: NgramDrafter | None = None,
                 params: HybridParams | None = None):
        self.model = model
        self.ngram = ngram or NgramDrafter(n_max=4, n_min=1)
        self.p = params or HybridParams()
        self.replayable = model.replayable
        self.rounds = {"ngram": 0, "model": 0}
        self._forget()  # sets ngram_alpha, and source: who proposed the last draft

    def model_backend(self) -> Backend | None:
        return self.model.model_backend()

    def _forget(self) -> None:
        self.ngram.reset()
        self.ngram_alpha = 1.0
        self.source = ""

    def reset(self) -> None:
        self.model.reset()
        self._forget()

    def begin(self, ctx: list[int]) -> None:
        self._forget()
        self.model.begin(ctx)

    def lookup(self, ctx: list[int], k: int) -> list[int] | None:
        """The n-gram tokens [<=k] if confident, else None (the model should draft)."""
        tokens, n_match = self.ngram.match(ctx, k)
        if (n_match >= self.p.min_match and len(tokens) >= min(k, self.p.min_tokens)
                and self.ngram_alpha >= self.p.min_alpha and tokens):
            self.source = "ngram"
            return tokens
        self.source = "model"
        return None

    def propose(self, ctx: list[int], k: int, sampling: SamplingConfig,
                rng: np.random.Generator) -> Draft:
        tokens = self.lookup(ctx, k)
        if tokens is not None:
            return Draft(tokens, None)  # q None: one-hot, exact for sampling too
        return self.model.propose(ctx, k, sampling, rng)

    def feedback(self, n_drafted: int, n_accepted: int) -> None:
        if not self.source or not n_drafted:  # nothing drafted (a lookup that found nothing)
            self.source = ""
            return
        self.rounds[self.source] += 1
        if self.source == "ngram":
            rate = n_accepted / n_drafted if n_drafted else 0.0
            self.ngram_alpha = self.p.decay * self.ngram_alpha + (1 - self.p.decay) * rate
        else:
            self.ngram_alpha = min(1.0, self.ngram_alpha + self.p.recover)
            self.model.feedback(n_drafted, n_accepted)
        self.source = ""
