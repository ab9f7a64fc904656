"""The verifier alone: greedy rule and the rejection-sampling identity on explicit p and q."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from draftwise.config import SamplingConfig
from draftwise.errors import DraftwiseError
from draftwise.sampling import probs
from draftwise.verifier import verify_greedy, verify_sampling


def onehot_logits(ids, V=6):
    x = np.zeros((len(ids), V), dtype=np.float32)
    x[np.arange(len(ids)), ids] = 5.0
    return x


def test_greedy_accepts_prefix_then_target_token():
    logits = onehot_logits([1, 2, 3, 4])
    v = verify_greedy([1, 2, 3], logits)
    assert (v.n_accepted, v.token) == (3, 4)
    v = verify_greedy([1, 5, 3], logits)
    assert (v.n_accepted, v.token) == (1, 2)
    v = verify_greedy([], logits[:1])
    assert (v.n_accepted, v.token) == (0, 1)


class GridRng:
    """Stands in for np.random.Generator: random() returns the given values in turn."""

    def __init__(self, *values: float):
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def output_distribution(p: np.ndarray, q: np.ndarray | int, M: int = 400) -> np.ndarray:
    """P(first output token = x) [V] of verify_sampling at one position, computed by running it
    on a grid of M midpoints for each uniform draw (accept test, then the residual's inverse CDF):
    exact up to about 2 / M. q: the draft's distribution [V], or a token id (a one-hot draft,
    q None)."""
    V = p.shape[0]
    grid = (np.arange(M) + 0.5) / M
    one_hot = isinstance(q, int)
    drafts = [(q, 1.0)] if one_hot else [(d, q[d]) for d in range(V) if q[d] > 0]
    qd = None if one_hot else q[None]
    out = np.zeros(V)
    for d, w in drafts:
        accepted = [verify_sampling([d], qd, np.stack([p, p]), GridRng(u, 0.5)).n_accepted == 1
                    for u in grid]  # 0.5: the bonus token's draw after an acceptance
        out[d] += w * np.mean(accepted)
        if all(accepted):
            continue
        u = grid[accepted.index(False)]  # a rejection: where the second draw sends it
        for u2 in grid:
            out[verify_sampling([d], qd, np.stack([p, p]), GridRng(u, u2)).token] += (
                w * (1 - np.mean(accepted)) / M)
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000), st.booleans())
def test_single_position_output_is_exactly_p(V, seed, one_hot):
    """verify_sampling itself, not a formula beside it: accept-or-resample yields p, with a
    sampled draft (q) and with a one-hot one."""
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(V)), rng.dirichlet(np.ones(V) * 0.3)
    draft = int(rng.integers(V)) if one_hot else q
    np.testing.assert_allclose(output_distribution(p, draft), p, atol=3 / 400)


def test_sampling_verifier_matches_target_distribution():
    """Empirical check on one position with a draft that strongly disagrees with the target."""
    from scipy.stats import chisquare

    rng = np.random.default_rng(0)
    V = 5
    p = np.array([[0.5, 0.2, 0.15, 0.1, 0.05], [0.2] * 5])
    q = np.array([[0.02, 0.02, 0.02, 0.04, 0.9]])
    counts = np.zeros(V)
    for _ in range(20_000):
        d = rng.choice(V, p=q[0])
        v = verify_sampling([d], q, p, rng)
        first = d if v.n_accepted == 1 else v.token
        counts[first] += 1
    assert chisquare(counts, p[0] * counts.sum()).pvalue > 0.001


def test_probs_top_k_top_p_and_temperature():
    logits = np.log(np.array([[0.4, 0.3, 0.2, 0.1]]))
    np.testing.assert_allclose(probs(logits, SamplingConfig(1.0)), [[0.4, 0.3, 0.2, 0.1]])
    np.testing.assert_allclose(probs(logits, SamplingConfig(1.0, top_k=2)), [[4 / 7, 3 / 7, 0, 0]])
    # top_p 0.6: 0.4 alone is short, 0.4 + 0.3 reaches it.
    np.testing.assert_allclose(probs(logits, SamplingConfig(1.0, top_p=0.6)), [[4 / 7, 3 / 7, 0, 0]])
    hot = probs(logits, SamplingConfig(2.0))[0]
    assert hot[0] < 0.4 and hot[3] > 0.1 and abs(hot.sum() - 1) < 1e-12


@pytest.mark.parametrize("kw", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5),
                                dict(top_k=-1)])
def test_bad_sampling_config(kw):
    with pytest.raises(DraftwiseError):
        SamplingConfig(**kw)
