"""K policies: fixed K, adaptive K, and adaptive K's state kept between runs (store)."""

from __future__ import annotations

from draftwise.config import SpecConfig
from draftwise.policy.adaptive import AdaptiveK
from draftwise.policy.base import FixedK, KPolicy

__all__ = ["AdaptiveK", "FixedK", "KPolicy", "make_policy"]


def make_policy(spec: SpecConfig) -> KPolicy:
    """The policy a SpecConfig asks for: fixed K, or adaptive K up to spec.k_max."""
    if spec.adaptive:
        return AdaptiveK(k_max=spec.k_max, k_init=spec.k)
    return FixedK(spec.k)
