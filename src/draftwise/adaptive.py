"""Adaptive draft length: pick each round's K to maximize expected tokens per second.

Per round the controller sees k drafted, n accepted and the seconds spent in draft and target
forwards. From these it keeps
- a decayed estimate of the per-token acceptance alpha (successes / positions reached),
- the draft cost per drafted token (EMA),
- the target's cost to verify n tokens t_v(n) = a + b (n - 1), fitted to EMAs per n, and
- the measured cost of a whole round per K (EMA; the first round of each K is a warm-up), which
  replaces K t_draft + t_v(K + 1) where known: on CPUs cost is far from linear in K. The
  neighbours of the chosen K are measured and re-measured every `refresh_every` rounds.
It picks K in 0..k_max maximizing E[tokens | K] / cost(K), where E[tokens | K] =
1 + sum_j prod_{i<=j} a_i with a_i the acceptance at draft position i given all before it were
accepted (with little evidence, the pooled alpha: then it is Leviathan et al. 2023's
(1 - alpha^(K+1)) / (1 - alpha)). K = 0 is a plain
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
    position_prior: float = 4.0  # pseudo-observations of the pooled alpha per draft position
    refresh_every: int = 48  # rounds after which a neighbouring K's round cost is measured again


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
        # Per draft position i: decayed (accepted, reached) counts. Acceptance is bursty (after
        # accepting i tokens the next is likelier), which the pooled i.i.d. alpha underrates.
        self._pos = np.zeros((2, k_max))
        self._t_draft: float | None = None  # seconds per drafted token
        self._t_verify: dict[int, float] = {}  # n verified -> EMA seconds
        self._interval = self.p.probe_every
        self._off_rounds = 0
        self._probing = False
        self._behind = False  # the last round was plain: the draft's cache is behind
        self._t_round: dict[int, float] = {}  # K -> EMA seconds of a whole round (draft + verify)
        self._seen: dict[int, int] = {}  # K -> rounds observed (the first is a warm-up)
        self._last: dict[int, int] = {}  # K -> round index of its last observation
        self._rounds = 0

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

        A K already measured uses its own round cost, not the model: on CPUs cost is not linear
        (llama.cpp's kernels favour batches that are multiples of 4; the first draft step also
        catches up on the target's token)."""
        line = self.cost_line()
        if line is None or self._t_draft is None:
            return None
        a, b = line
        cost = [self._t_round.get(k, self._t_verify.get(k + 1, a + b * k) + k * self._t_draft)
                for k in range(self.k_max + 1)]
        return [self.expected_tokens(k) / max(cost[k], 1e-12) for k in range(self.k_max + 1)]

    def expected_tokens(self, k: int) -> float:
        """1 + sum_j prod_{i<=j} a_i, a_i: acceptance at position i given all before accepted,
        shrunk towards the pooled alpha where position i has little evidence."""
        w, alpha = self.p.position_prior, self.alpha
        a = (self._pos[0, :k] + w * alpha) / (self._pos[1, :k] + w)
        return float(1.0 + np.cumprod(a).sum())

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
        self._pos *= w
        self._interval = self.p.probe_every
        self._off_rounds = 0
        self._probing = False

    def next_k(self) -> int:
        if self._t_verify and 1 not in self._t_verify and self._t_draft is not None:
            return 0  # calibrate: one autoregressive round measures t_v(1)
        k = self.best_k()
        self._probing = False
        for nb in (k - 1, k + 1):  # keep the neighbours' round costs measured and fresh
            stale = self._rounds - self._last.get(nb, -10**9) > self.p.refresh_every
            if k > 0 and self._t_verify and 1 <= nb <= self.k_max and (
                    nb not in self._t_round or stale):
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
        # After plain rounds the draft first catches up on the tokens it missed: that round's
        # draft time says nothing about the cost per drafted token.
        behind, self._behind = self._behind, k == 0 and t_draft == 0
        self._rounds += 1
        self._last[k] = self._rounds
        self._seen[k] = self._seen.get(k, 0) + 1
        if not behind and self._seen[k] > 1:  # the first round of a K may allocate buffers
            old_r = self._t_round.get(k)
            t = t_draft + t_target
            self._t_round[k] = t if old_r is None else c * old_r + (1 - c) * t
        if (k > 0 or t_draft > 0) and not behind:  # t_draft > 0, k = 0: p_min stopped at once
            per_tok = t_draft / max(k, 1)
            old_t = self._t_draft
            self._t_draft = per_tok if old_t is None else c * old_t + (1 - c) * per_tok
        if k == 0:
            return
        if self._probing:  # conditions may have changed while off: weigh the probe more
            self._succ *= 0.5
            self._trials *= 0.5
            self._pos *= 0.5
        trials = min(k, n_accepted + 1)
        d = self.p.decay ** trials
        self._succ = d * self._succ + n_accepted
        self._trials = d * self._trials + trials
        self._pos *= d
        self._pos[0, :n_accepted] += 1
        self._pos[1, :trials] += 1
        if self._probing and self.best_k() == 0:
            self._interval = min(2 * self._interval, self.p.probe_max)
