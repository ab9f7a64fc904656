"""Turn logits into the distributions p and q (numpy only).

Temperature, then top-k, then top-p, the order transformers uses. The same function is applied to
target and draft logits so that rejection sampling compares like with like.
"""

from __future__ import annotations

import numpy as np

from draftwise.config import SamplingConfig

# top-p looks at this many of the largest probabilities first and sorts the full row only when they
# do not already hold top_p of the mass: sorting 150k floats per position would dominate a round.
_TOP_P_WINDOW = 2048


def probs(logits: np.ndarray, s: SamplingConfig) -> np.ndarray:
    """logits [n, V] -> probabilities [n, V] float64 (rows sum to 1). Needs temperature > 0."""
    x = np.asarray(logits, dtype=np.float64) / s.temperature
    if s.top_k and s.top_k < x.shape[-1]:
        kth = np.partition(x, -s.top_k, axis=-1)[:, -s.top_k][:, None]
        x = np.where(x < kth, -np.inf, x)
    x = x - x.max(axis=-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=-1, keepdims=True)
    if s.top_p < 1.0:
        for row in p:
            _top_p_row(row, s.top_p)
    return p


def _top_p_row(row: np.ndarray, top_p: float) -> None:
    """Zero all but the smallest set of largest entries whose mass reaches top_p; renormalize."""
    V = row.shape[0]
    m = min(V, _TOP_P_WINDOW)
    cand = np.argpartition(row, V - m)[V - m:] if m < V else np.arange(V)
    if row[cand].sum() < top_p:
        cand = np.arange(V)
    order = cand[np.argsort(-row[cand], kind="stable")]
    cum = np.cumsum(row[order])
    n_keep = int(np.searchsorted(cum, top_p, side="left")) + 1  # include the token that crosses
    keep = order[:n_keep]
    kept = row[keep]
    row[:] = 0.0
    row[keep] = kept / kept.sum()


def sample(p: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one index from an unnormalized non-negative vector p [V] (inverse CDF)."""
    cum = np.cumsum(p)
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
