"""Expected tokens per round: the arithmetic shared by adaptive K and `advise`."""

from __future__ import annotations


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens per round with K drafts, i.i.d. acceptance alpha: (1 - alpha^(K+1)) / (1 - alpha)."""
    if alpha >= 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)
