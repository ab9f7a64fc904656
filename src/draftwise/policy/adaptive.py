"""Adaptive draft length: pick each round's K to maximize expected tokens per second.

Per round the controller sees k drafted, n accepted and the seconds spent in draft and target
forwards. From these it keeps
- decayed acceptance counts, pooled (alpha) and per draft position,
- the draft cost per drafted token (EMA),
- the target's cost to verify n tokens t_v(n) = a + b (n - 1), fitted to EMAs per n, and
- the measured cost of a whole round per K (EMA), which replaces K t_draft + t_v(K + 1) where
  known: on CPUs cost is far from linear in K. The neighbours of the chosen K are measured
  (interleaved with it) and re-measured every `refresh_every` rounds.
The first round of each generation that it sees (the first drafted one) is taken as a warm-up:
its costs are not used.

It picks K in 0..k_max maximizing E[tokens | K] / cost(K), where E[tokens | K] =
1 + sum_j prod_{i<=j} a_i with a_i the acceptance at draft position i given all before it were
accepted (with little evidence, the pooled alpha: then it is Leviathan et al. 2023's
(1 - alpha^(K+1)) / (1 - alpha)). K = 0 is a plain autoregressive round: speculation is off.
While off, it probes with the best K >= 1 every `probe_every` rounds, doubling the interval after
each probe that does not turn it back on. It starts with k_init. Speculation stays on for the
first `min_rounds_off` rounds of a generation (a rejected first token says little about the
reply); t_v(1) is estimated from the cost line until turning off is within reach, then one
autoregressive round measures it. Costs outlive `reset` (same hardware); a new generation starts
from the long-run acceptance, weighted as `prompt_prior` rounds. state() / load_state() carry
both across processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from draftwise.policy.base import KPolicy


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
    prompt_prior: float = 4.0  # a new generation starts from the long-run acceptance with this
    #                            many rounds' weight: prompts differ, the last one is no guide
    long_decay: float = 0.998  # per drafted position reached: memory of the long-run counts
    position_prior: float = 4.0  # pseudo-observations of the pooled alpha per draft position
    refresh_every: int = 48  # rounds after which a neighbouring K's round cost is measured again
    neighbour_obs: int = 3  # round costs measured per neighbouring K before it is trusted
    min_rounds_off: int = 3  # rounds of a generation before speculation may turn off
    calibrate_within: float = 0.25  # measure t_v(1) once AR is predicted within this of the best



class AdaptiveK(KPolicy):
    """Cost-aware K in 0..k_max from live acceptance and timings; k_init until costs are known."""

    def __init__(self, k_max: int = 8, k_init: int = 4, params: AdaptiveParams | None = None):
        self.k_max, self.k_init = k_max, min(k_init, k_max)
        self.p = params or AdaptiveParams()
        # Per draft position i: decayed (accepted, reached) counts in this generation, and over
        # all of them (long run). Acceptance is bursty (after accepting i tokens the next is
        # likelier), which the pooled i.i.d. alpha underrates.
        self._pos = np.zeros((2, k_max))
        self._pos_all = np.zeros((2, k_max))
        self._t_draft: float | None = None  # seconds per drafted token
        self._t_verify: dict[int, float] = {}  # n verified -> EMA seconds
        self._interval = self.p.probe_every
        self._off_rounds = 0
        self._probing = False
        self._behind = False  # the last round was plain: the draft's cache is behind
        self._t_round: dict[int, float] = {}  # K -> EMA seconds of a whole round (draft + verify)
        self._last: dict[int, int] = {}  # K -> round index of its last observation
        self._n_obs: dict[int, int] = {}  # K -> round costs measured
        self._explored = False  # the last round measured a neighbour
        self._rounds = 0
        self._gen_rounds = 0  # rounds observed in this generation

    # -- estimates -------------------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        a0, b0 = self.p.prior
        succ, trials = self._pos.sum(axis=1)
        return (succ + a0) / (trials + a0 + b0)

    def cost_line(self) -> tuple[float, float] | None:
        """(a, b) of t_v(n) = a + b (n - 1) in seconds; None before any measurement.

        Until t_v(1) is measured, a comes from the prior slope (a line through two noisy
        multi-token costs can put a anywhere); then the line is fitted to all measured n."""
        pts = self._t_verify
        if not pts:
            return None
        if 1 not in pts or len(pts) == 1:
            s = self.p.verify_slope
            a = min(t / (1.0 + s * (n - 1)) for n, t in pts.items())
            return a, s * a
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
        tokens = self._expected_tokens()
        return [tokens[k] / max(cost[k], 1e-12) for k in range(self.k_max + 1)]

    def _expected_tokens(self) -> np.ndarray:
        """[k_max + 1] E[tokens | K] = 1 + sum_{j<=K} prod_{i<=j} a_i, a_i: acceptance at position
        i given all before accepted, shrunk towards the pooled alpha where evidence is little."""
        w = self.p.position_prior
        a = (self._pos[0] + w * self.alpha) / (self._pos[1] + w)
        return 1.0 + np.concatenate(([0.0], np.cumsum(np.cumprod(a))))

    def expected_tokens(self, k: int) -> float:
        return float(self._expected_tokens()[k])

    def best_k(self, k_min: int = 0, g: list[float] | None = None) -> int:
        """argmax of predicted throughput g (default: throughputs()) over K in k_min..k_max;
        K = 0 must win by the margin."""
        g = self.throughputs() if g is None else g
        if g is None:
            return max(self.k_init, k_min)
        k_spec = 1 + int(np.argmax(g[1:]))
        if k_min == 0 and g[0] * (1.0 + self.p.margin) > g[k_spec]:
            return 0
        return k_spec

    def state(self) -> dict:
        """What holds beyond one generation, JSON-ready: the measured costs (seconds) and the
        long-run acceptance counts per draft position ([2, k_max]: accepted, reached)."""
        return {"t_draft": self._t_draft, "t_verify": self._t_verify, "t_round": self._t_round,
                "n_obs": self._n_obs, "acceptance": self._pos_all.tolist()}

    def load_state(self, d: dict) -> None:
        """Start from state() of an earlier run; neighbours are re-measured once (stale)."""
        t_draft = d["t_draft"]
        self._t_draft = None if t_draft is None else float(t_draft)
        self._t_verify = {int(n): float(t) for n, t in d["t_verify"].items()}
        self._t_round = {int(k): float(t) for k, t in d["t_round"].items() if int(k) <= self.k_max}
        self._n_obs = {int(k): int(n) for k, n in d["n_obs"].items() if int(k) <= self.k_max}
        acc = np.array(d["acceptance"], dtype=float)[:, :self.k_max]
        self._pos_all = np.zeros((2, self.k_max))
        self._pos_all[:, :acc.shape[1]] = acc
        self.reset()

    # -- KPolicy -----------------------------------------------------------------------------------
    def reset(self) -> None:
        reached = self._pos_all[1, 0]
        self._pos = self._pos_all * (min(1.0, self.p.prompt_prior / reached) if reached else 0.0)
        self._interval = self.p.probe_every
        self._off_rounds = 0
        self._probing = False
        self._gen_rounds = 0

    def next_k(self) -> int:
        self._probing = False
        g = self.throughputs()  # once per round: every choice below reads the same prediction
        if self._gen_rounds < self.p.min_rounds_off:
            k = self.best_k(1, g)
        elif (1 not in self._t_verify and g is not None
              and g[0] * (1.0 + self.p.calibrate_within) > max(g[1:])):
            return 0  # turning off may pay: one autoregressive round measures t_v(1)
        else:
            k = self.best_k(0, g)
        explored, self._explored = self._explored, False
        for nb in (k - 1, k + 1):  # keep the neighbours' round costs measured and fresh
            stale = self._rounds - self._last.get(nb, -10**9) > self.p.refresh_every
            if k > 0 and not explored and self._t_verify and 1 <= nb <= self.k_max and (
                    self._n_obs.get(nb, 0) < self.p.neighbour_obs or stale):
                self._explored = True  # interleaved with K: both see the same machine load
                return nb
        if k == 0:
            self._off_rounds += 1
            if self._off_rounds > self._interval:
                self._off_rounds = 0
                self._probing = True
                k = max(self.best_k(1, g), min(self.p.probe_k, self.k_max))
        else:
            self._off_rounds = 0
            self._interval = self.p.probe_every
        return k

    def observe(self, k: int, n_accepted: int, t_draft: float, t_target: float) -> None:
        # After plain rounds the draft first catches up on the tokens it missed: that round's
        # draft time says nothing about the cost per drafted token.
        behind, self._behind = self._behind, k == 0 and t_draft == 0
        self._rounds += 1
        self._gen_rounds += 1
        self._last[k] = self._rounds
        if self._gen_rounds > 1:  # the first round of a generation is a warm-up
            self._observe_costs(k, t_draft, t_target, behind)
        if k == 0:
            return
        if self._probing:  # conditions may have changed while off: weigh the probe more
            self._pos *= 0.5
        trials = min(k, n_accepted + 1)
        for counts, decay in ((self._pos, self.p.decay), (self._pos_all, self.p.long_decay)):
            counts *= decay ** trials
            counts[0, :n_accepted] += 1
            counts[1, :trials] += 1
        if self._probing and self.best_k() == 0:
            self._interval = min(2 * self._interval, self.p.probe_max)

    def _observe_costs(self, k: int, t_draft: float, t_target: float, behind: bool) -> None:
        c = self.p.cost_decay

        def ema(old: float | None, new: float) -> float:
            return new if old is None else c * old + (1 - c) * new

        self._t_verify[k + 1] = ema(self._t_verify.get(k + 1), t_target)
        if not behind:
            self._t_round[k] = ema(self._t_round.get(k), t_draft + t_target)
            self._n_obs[k] = self._n_obs.get(k, 0) + 1
            if k > 0 or t_draft > 0:  # t_draft > 0, k = 0: p_min stopped at once
                self._t_draft = ema(self._t_draft, t_draft / max(k, 1))
