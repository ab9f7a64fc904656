"""Decide how many drafted tokens the target keeps, and the target's own next token.

Greedy: accept while the draft token is the target's argmax, then the target's token.
Sampling: Leviathan et al. 2023 / Chen et al. 2023. Accept d_i with probability min(1, p_i(d)/q_i(d));
on the first rejection sample from norm(max(0, p_i - q_i)) over the full vocabulary; if all K are
accepted, sample the bonus token from p_K. A draft without q (n-gram) is a one-hot q, which keeps the
output distribution exactly p.

Lenient (lossy, opt-in) modes keep what these keep plus what their rule keeps (draftwise.acceptance);
`verify` picks greedy or sampling verification and passes the mode on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from draftwise.acceptance import EXACT, Acceptance
from draftwise.config import SamplingConfig
from draftwise.sampling import probs, sample


@dataclass(frozen=True)
class Verdict:
    n_accepted: int  # drafted tokens kept, 0..K
    token: int  # the target's token after them (correction or bonus)
    n_lenient: int = 0  # of the kept ones, those exact verification would have rejected


def verify(draft: Sequence[int], q: np.ndarray | None, logits_p: np.ndarray,
           sampling: SamplingConfig, rng: np.random.Generator, accept: Acceptance) -> Verdict:
    """draft [K]; q [K, V] or None; logits_p [K+1, V] target logits; accept: the mode."""
    if sampling.greedy:
        return verify_greedy(draft, logits_p, accept)
    return verify_sampling(draft, q, probs(logits_p, sampling), rng, accept)


def verify_greedy(draft: Sequence[int], logits_p: np.ndarray, accept: Acceptance = EXACT) -> Verdict:
    """draft [K] ids; logits_p [K+1, V] target logits at the K+1 verified positions. A lenient
    `accept` also keeps a draft token its rule keeps; later rows are still right, since the
    target's forward saw the drafted tokens, so row i + 1 is conditioned on what was kept."""
    n_lenient = 0
    for i, d in enumerate(draft):
        t = int(np.argmax(logits_p[i]))
        if t == d:
            continue
        if not accept.keeps_greedy(logits_p[i], d):
            return Verdict(i, t, n_lenient)
        n_lenient += 1
    return Verdict(len(draft), int(np.argmax(logits_p[len(draft)])), n_lenient)


def verify_sampling(
    draft: Sequence[int], q: np.ndarray | None, p: np.ndarray, rng: np.random.Generator,
    accept: Acceptance = EXACT,
) -> Verdict:
    """draft [K]; q [K, V] draft probabilities or None (one-hot); p [K+1, V] target probabilities.

    A lenient `accept` keeps what the exact test keeps (the same draws), else what its rule keeps;
    on a rejection it samples from p itself: the residual norm(max(0, p - q)) only compensates
    for accepting with probability min(1, p/q); once the rule keeps more, no correction restores
    p, and p is the target's own choice (as in Medusa's typical acceptance)."""
    n_lenient = 0
    for i, d in enumerate(draft):
        p_d = p[i, d]
        q_d = 1.0 if q is None else q[i, d]
        if q_d > 0 and rng.random() * q_d < p_d:  # accept with probability min(1, p/q)
            continue
        if accept.keeps_sampling(p[i], d):
            n_lenient += 1
            continue
        if not accept.exact:
            return Verdict(i, sample(p[i], rng), n_lenient)
        if q is None:
            residual = p[i].copy()
            residual[d] = 0.0
        else:
            residual = np.maximum(p[i] - q[i], 0.0)
        if residual.sum() <= 0:  # p == q up to rounding: the residual is empty, p itself is exact
            residual = p[i]
        return Verdict(i, sample(residual, rng))
    return Verdict(len(draft), sample(p[len(draft)], rng), n_lenient)
