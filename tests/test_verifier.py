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


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12), st.integers(0, 10_000))
def test_single_position_residual_is_exact(V, seed):
    """Accept-or-resample yields exactly p: P(out=x) = min(p,q)(x) + (1-sum min) * residual(x)."""
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(V)), rng.dirichlet(np.ones(V) * 0.3)
    accept = np.minimum(p, q)
    residual = np.maximum(p - q, 0)
    total = accept + (1 - accept.sum()) * residual / residual.sum()
    np.testing.assert_allclose(total, p, atol=1e-12)


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
