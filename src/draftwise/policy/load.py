"""Load-aware K: one draft length per batch iteration, chosen for the most accepted tokens per
second over all the sequences decoding together.

On a CPU a decode of n tokens costs far less than n decodes of one, so batching sequences and
batching draft tokens compete for the same cheap slots. With m sequences speculating at K, an
iteration costs K draft decodes of m tokens and one target decode of m (K + 1) tokens (plus the
prompt chunks riding along), and yields sum_i E[tokens | alpha_i, K]:

    K* = argmax_K  sum_i E(alpha_i, K) / (K T_draft(m) + T_target(m (K + 1) + n_extra))

T_target(n) and T_draft(m) are tables of measured decode times per batch size, learned online
(EMA per size; an unmeasured size is interpolated between measured ones, or extrapolated along
their least-squares line). alpha_i is sequence i's acceptance so far, shrunk towards the pooled
acceptance of all sequences. K = 0 (plain batched decoding) wins when it is faster by a margin;
every `explore_every` iterations a neighbour of the best K runs instead, so the sizes around the
choice stay measured as the load changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from draftwise.policy.expected import expected_tokens
from draftwise.stats import Stats


@dataclass(frozen=True)
class LoadParams:
    k_max: int = 8
    k_init: int = 3  # K until both tables have a measurement
    decay: float = 0.8  # EMA weight of old cost measurements
    slope: float = 0.15  # extra cost per token / cost of one, until two sizes are measured
    margin: float = 0.03  # speculate only when predicted >= (1 + margin) x plain decoding
    explore_every: int = 16
    shrink: float = 4.0  # pseudo-observations of the pooled acceptance per sequence
    pooled_decay: float = 0.995  # per draft position reached: memory of the pooled counts


class CostTable:
    """T(n): EMA seconds of one decode carrying n tokens."""

    def __init__(self, decay: float, slope: float):
        self.decay, self.slope = decay, slope
        self.t: dict[int, float] = {}

    def observe(self, n: int, seconds: float) -> None:
        old = self.t.get(n)
        self.t[n] = seconds if old is None else self.decay * old + (1 - self.decay) * seconds

    def __call__(self, n: int) -> float | None:
        """Predicted seconds for n tokens, or None before any measurement."""
        t = self.t
        if n in t or not t:
            return t.get(n)
        lo = max((x for x in t if x < n), default=None)
        hi = min((x for x in t if x > n), default=None)
        if lo is not None and hi is not None:
            return t[lo] + (t[hi] - t[lo]) * (n - lo) / (hi - lo)
        near = lo if lo is not None else hi
        if len(t) >= 2:
            b = max(float(np.polyfit(list(t), list(t.values()), 1)[0]), 0.0)
        else:  # one size measured: the prior slope, relative to one token's cost
            b = self.slope * t[near] / (1.0 + self.slope * (near - 1))
        return max(t[near] + b * (n - near), 1e-9)


class LoadAwareK:
    """Chooses one K for a batch's sequences from measured costs and their acceptance."""

    def __init__(self, params: LoadParams | None = None):
        self.p = params or LoadParams()
        self.target = CostTable(self.p.decay, self.p.slope)
        self.draft = CostTable(self.p.decay, self.p.slope)  # per draft decode, by sequences
        self._pooled = np.zeros(2)  # decayed (accepted, reached) over all sequences
        self._iter = 0
        self._behind = False  # the last iteration was plain: drafts catch up in the next one

    @property
    def pooled_alpha(self) -> float:
        acc, reached = self._pooled
        return (acc + 1.0) / (reached + 2.0)

    def alpha(self, st: Stats) -> float:
        """One sequence's acceptance per draft position reached, shrunk towards the pool's."""
        w = self.p.shrink
        return (sum(st.accepted_at) + w * self.pooled_alpha) / (sum(st.drafted_at) + w)

    def throughput(self, alphas: list[float], k: int, n_extra: int = 0) -> float | None:
        """Predicted accepted tokens per second at K = k, or None while a cost is unknown."""
        m = len(alphas)
        t_target = self.target(m * (k + 1) + n_extra)
        t_draft = self.draft(m) if k else 0.0
        if t_target is None or t_draft is None:
            return None
        return sum(expected_tokens(a, k) for a in alphas) / (k * t_draft + t_target)

    def choose(self, alphas: list[float], n_extra: int = 0) -> int:
        """K for sequences with acceptance alphas; n_extra: other tokens in the target decode."""
        self._iter += 1
        g = [self.throughput(alphas, k, n_extra) for k in range(self.p.k_max + 1)]
        if any(x is None for x in g):
            return self.p.k_init
        k_spec = 1 + int(np.argmax(g[1:]))
        best = 0 if g[0] * (1.0 + self.p.margin) > g[k_spec] else k_spec
        if self._iter % self.p.explore_every == 0:  # a neighbour, alternating below and above
            nb = best + (1 if (self._iter // self.p.explore_every) % 2 else -1)
            return min(max(nb, 0 if best else 1), self.p.k_max)
        return best

    def observe(self, rounds: list[tuple[int, int]], n_target: int, t_draft: float,
                t_target: float) -> None:
        """rounds: (k, n_accepted) per sequence; n_target: tokens of the target decode; seconds of
        the iteration's draft and target forwards."""
        self.target.observe(n_target, t_target)
        m, k = sum(1 for kk, _ in rounds if kk), max((kk for kk, _ in rounds), default=0)
        if k and not self._behind:  # after a plain iteration drafts first catch up: not typical
            self.draft.observe(m, t_draft / k)
        self._behind = k == 0
        for kk, n_acc in rounds:
            reached = min(kk, n_acc + 1)
            self._pooled *= self.p.pooled_decay ** reached
            self._pooled += (n_acc, reached)
