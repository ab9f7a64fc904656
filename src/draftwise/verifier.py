"""Decide how many drafted tokens the target keeps, and the target's own next token.

Greedy: accept while the draft token is the target's argmax, then the target's token.
Sampling: Leviathan et al. 2023 / Chen et al. 2023. Accept d_i with probability min(1, p_i(d)/q_i(d));
on the first rejection sample from norm(max(0, p_i - q_i)) over the full vocabulary; if all K are
accepted, sample the bonus token from p_K. A draft without q (n-gram) is a one-hot q, which keeps the
output distribution exactly p.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from draftwise.sampling import sample


@dataclass(frozen=True)
class Verdict:
    n_accepted: int  # drafted tokens kept, 0..K
    token: int  # the target's token after them (correction or bonus)


def verify_greedy(draft: Sequence[int], logits_p: np.ndarray) -> Verdict:
    """draft [K] ids; logits_p [K+1, V] target logits at the K+1 verified positions."""
    for i, d in enumerate(draft):
        t = int(np.argmax(logits_p[i]))
        if t != d:
            return Verdict(i, t)
    return Verdict(len(draft), int(np.argmax(logits_p[len(draft)])))


def verify_sampling(
    draft: Sequence[int], q: np.ndarray | None, p: np.ndarray, rng: np.random.Generator
) -> Verdict:
    """draft [K]; q [K, V] draft probabilities or None (one-hot); p [K+1, V] target probabilities."""
    for i, d in enumerate(draft):
        p_d = p[i, d]
        q_d = 1.0 if q is None else q[i, d]
        if q_d > 0 and rng.random() * q_d < p_d:  # accept with probability min(1, p/q)
            continue
        if q is None:
            residual = p[i].copy()
            residual[d] = 0.0
        else:
            residual = np.maximum(p[i] - q[i], 0.0)
        if residual.sum() <= 0:  # p == q up to rounding: the residual is empty, p itself is exact
            residual = p[i]
        return Verdict(i, sample(residual, rng))
    return Verdict(len(draft), sample(p[len(draft)], rng))
