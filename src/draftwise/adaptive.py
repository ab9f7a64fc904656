"""Adaptive draft length: pick each round's K to maximize expected tokens per second.

Per round the controller sees k drafted, n accepted and the seconds spent in draft and target
forwards. From these it keeps
- a decayed estimate of the per-token acceptance alpha (successes / positions reached),
- the draft cost per drafted token (EMA), and
- the target's cost to verify n tokens t_v(n): an EMA per n measured, else a + b (n - 1) fitted
  to those (each neighbour of the chosen K is tried once, so that its own cost is known),
and picks K in 0..k_max maximizing E[tokens | K] / (K t_draft + t_v(K + 1)), where
E[tokens | K] = (1 - alpha^(K+1)) / (1 - alpha) (Leviathan et al. 2023). K = 0 is a plain
autoregressive round: speculation is off. While off, it probes with the best K >= 1 every
`probe_every` rounds, doubling the interval after each probe that does not turn it back on.
It starts with k_init; after the first round, one autoregressive round measures t_v(1). Costs
outlive `reset` (same hardware); acceptance evidence is down-weighted for the new prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from draftwise.controller import KPolicy


@dataclass(frozen=True)
class AdaptiveParams:
    """Tuning of AdaptiveK. cost_decay is per round; verify_slope is the prior b / a (CPU-like)."""

    decay: float = 0.97  # per drafted position reached: memory of the acceptance counts (~30)
    cost_decay: float = 0.8  # EMA weight of old cost measurements
    prior: tuple[float, float] = (1.0, 1.0)  # Beta prior (successes, failures) on alpha
    verify_slope: float = 0.1  # extra cost per verified token / cost of 1, until measured
    margin: float = 0.03  # speculate only when predicted >= (1 + margin) x autoregressive
    probe_every: int = 8
    probe_max: int = 64
    probe_k: int = 1  # probes draft at least this many tokens
    new_prompt_weight: float = 0.25  # acceptance evidence kept when a new generation starts


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens per round with K drafts, i.i.d. acceptance alpha: (1 - alpha^(K+1)) / (1 - alpha)."""
    if alpha >= 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


class AdaptiveK(KPolicy):
    """Cost-aware K in 0..k_max from live acceptance and timings; k_init until costs are known."""

    def __init__(self, k_max: int = 8, k_init: int = 4, params: AdaptiveParams | None = None):
        self.k_max, self.k_init = k_max, min(k_init, k_max)
        self.p = params or AdaptiveParams()
        self._succ = self._trials = 0.0
        self._t_draft: float | None = None  # seconds per drafted token
        self._t_verify: dict[int, float] = {}  # n verified -> EMA seconds
        self._interval = self.p.probe_every
        self._off_rounds = 0
        self._probing = False

    # -- estimates -------------------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        a0, b0 = self.p.prior
        return (self._succ + a0) / (self._trials + a0 + b0)

    def cost_line(self) -> tuple[float, float] | None:
        """(a, b) of t_v(n) = a + b (n - 1) in seconds; None before any measurement."""
        pts = self._t_verify
        if not pts:
            return None
        if len(pts) == 1:
            (n0, t0), = pts.items()
            a = t0 / (1.0 + self.p.verify_slope * (n0 - 1))
            return a, self.p.verify_slope * a
        x = np.array(list(pts), dtype=float) - 1.0
        y = np.array(list(pts.values()))
        b = max(float(np.polyfit(x, y, 1)[0]), 0.0)
        return max(float(np.mean(y - b * x)), 1e-9), b

    def throughputs(self) -> list[float] | None:
        """[k_max + 1] predicted tokens per second for K = 0..k_max (None before any costs).

        A verify size already measured uses its own EMA, not the line: on CPUs the cost is not
        linear in n (llama.cpp's kernels favour batches that are multiples of 4)."""
        line = self.cost_line()
        if line is None or self._t_draft is None:
            return None
        a, b = line
        alpha = self.alpha
        t_v = [self._t_verify.get(k + 1, a + b * k) for k in range(self.k_max + 1)]
        return [expected_tokens(alpha, k) / max(t_v[k] + k * self._t_draft, 1e-12)
                for k in range(self.k_max + 1)]

    def best_k(self, k_min: int = 0) -> int:
        """argmax of predicted throughput over K in k_min..k_max; K = 0 must win by the margin."""
        g = self.throughputs()
        if g is None:
            return max(self.k_init, k_min)
        k_spec = 1 + int(np.argmax(g[1:]))
        if k_min == 0 and g[0] * (1.0 + self.p.margin) > g[k_spec]:
            return 0
        return k_spec

    # -- KPolicy -----------------------------------------------------------------------------------
    def reset(self) -> None:
        w = self.p.new_prompt_weight
        self._succ *= w
        self._trials *= w
        self._interval = self.p.probe_every
        self._off_rounds = 0
        self._probing = False

    def next_k(self) -> int:
        if self._t_verify and 1 not in self._t_verify and self._t_draft is not None:
            return 0  # calibrate: one autoregressive round measures t_v(1)
        k = self.best_k()
        self._probing = False
        for nb in (k - 1, k + 1):  # measure the neighbours' verify cost once: it is not linear
            if k > 0 and self._t_verify and 1 <= nb <= self.k_max and nb + 1 not in self._t_verify:
                return nb
        if k == 0:
            self._off_rounds += 1
            if self._off_rounds > self._interval:
                self._off_rounds = 0
                self._probing = True
                k = max(self.best_k(k_min=1), min(self.p.probe_k, self.k_max))
        else:
            self._off_rounds = 0
            self._interval = self.p.probe_every
        return k

    def observe(self, k: int, n_accepted: int, t_draft: float, t_target: float) -> None:
        c = self.p.cost_decay
        n = k + 1
        old = self._t_verify.get(n)
        self._t_verify[n] = t_target if old is None else c * old + (1 - c) * t_target
        if k > 0 or t_draft > 0:  # t_draft > 0 with k = 0: p_min stopped the draft at once
            per_tok = t_draft / max(k, 1)
            old_t = self._t_draft
            self._t_draft = per_tok if old_t is None else c * old_t + (1 - c) * per_tok
        if k == 0:
            return
        if self._probing:  # conditions may have changed while off: weigh the probe more
            self._succ *= 0.5
            self._trials *= 0.5
        trials = min(k, n_accepted + 1)
        d = self.p.decay ** trials
        self._succ = d * self._succ + n_accepted
        self._trials = d * self._trials + trials
        if self._probing and self.best_k() == 0:
            self._interval = min(2 * self._interval, self.p.probe_max)
