"""The engine on tiny random HF models and an exact bigram model."""

import numpy as np
import pytest
from scipy.stats import chisquare

from draftwise.backends.transformers import TransformersBackend
from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.drafters.model import ModelDrafter
from draftwise.drafters.ngram import NgramDrafter
from draftwise.engine import Engine
from draftwise.errors import DraftwiseError
from draftwise.sampling import probs
from toy import BigramBackend

PROMPTS = ["def quicksort(a):\n", "The quick brown fox", "for i in range(10):\n    print(i"]


@pytest.fixture(scope="module")
def pair(tiny_models):
    t, d = tiny_models
    return TransformersBackend(str(t)), TransformersBackend(str(d))


@pytest.fixture(scope="module")
def ar_outputs(pair):
    target = pair[0]
    cfg = GenerateConfig(max_tokens=40)
    return {p: Engine(target).generate(p, cfg).tokens for p in PROMPTS}


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("kind", ["model", "ngram"])
def test_greedy_speculation_is_lossless(pair, ar_outputs, k, kind):
    target, draft = pair
    drafter = ModelDrafter(draft) if kind == "model" else NgramDrafter()
    engine = Engine(target, drafter, SpecConfig(k=k))
    for p in PROMPTS:
        out = engine.generate(p, GenerateConfig(max_tokens=40))
        assert out.tokens == ar_outputs[p]
        st = out.stats
        assert st.n_generated == len(out.tokens) == 40
        assert 0 <= st.n_accepted <= st.n_drafted <= k * st.n_rounds
        assert st.tau == pytest.approx(st.n_generated / st.n_rounds)
    if kind == "model":
        assert engine.stats.n_accepted > 0  # the noisy copy agrees often


def test_backend_rollback_matches_fresh_run(pair):
    target = pair[0]
    ids = target.tokenize("The quick brown fox jumps")
    target.rollback(0)
    fresh = target.forward(ids, len(ids)).copy()
    target.rollback(2)
    target.forward([7, 9, 11], 3)  # something else, then undo it
    target.rollback(2)
    again = target.forward(ids[2:], len(ids) - 2)
    np.testing.assert_allclose(again, fresh[2:], atol=1e-5)
    assert target.n_past == len(ids)


def test_stop_string_eos_and_budget(pair):
    target, draft = pair
    engine = Engine(target, ModelDrafter(draft), SpecConfig(k=3))
    full = engine.generate("The quick", GenerateConfig(max_tokens=30)).text
    stop = full[5:8]
    cut = engine.generate("The quick", GenerateConfig(max_tokens=30, stop=(stop,)))
    assert cut.text == full[:full.index(stop)] and cut.stats.finish_reason == "stop"
    eos_engine = Engine(target, ModelDrafter(draft), SpecConfig(k=3))
    eos_id = engine.tokens[3]  # pretend this token ends generation
    object.__setattr__(target.vocab, "eos_ids", frozenset([eos_id]))
    try:
        out = eos_engine.generate("The quick", GenerateConfig(max_tokens=30))
    finally:
        object.__setattr__(target.vocab, "eos_ids", frozenset([target.tok.eos_token_id]))
    assert out.tokens == engine.tokens[:3] and out.stats.finish_reason == "stop"


def test_context_limit_and_long_prompt():
    table = np.random.default_rng(0).normal(size=(8, 8))
    engine = Engine(BigramBackend(table, n_ctx=20), NgramDrafter(), SpecConfig(k=4))
    out = engine.generate("1 2 3 1 2 3", GenerateConfig(max_tokens=100))
    assert out.stats.finish_reason == "length" and 6 + len(out.tokens) <= 20
    with pytest.raises(DraftwiseError, match="context holds 20"):
        engine.generate(" ".join(["1"] * 25), GenerateConfig())


def _pair_distribution(table, s: SamplingConfig, prev: int) -> np.ndarray:
    p1 = probs(table[prev][None], s)[0]
    p2 = probs(table, s)  # [V, V]: row x1 -> distribution of x2
    return p1[:, None] * p2


@pytest.mark.parametrize("s", [SamplingConfig(1.0), SamplingConfig(0.7, top_k=4),
                               SamplingConfig(1.3, top_p=0.8)], ids=["t1", "topk", "topp"])
@pytest.mark.parametrize("kind", ["model", "ngram"])
def test_sampling_speculation_follows_target_distribution(s, kind):
    """Chi-square over the first two sampled tokens (V^2 cells), fixed seeds: deterministic."""
    V, n = 6, 4000
    rng = np.random.default_rng(1)
    table = rng.normal(scale=1.5, size=(V, V))
    bad_draft = -table + rng.normal(size=(V, V))  # disagrees strongly with the target
    target = BigramBackend(table)
    drafter = ModelDrafter(BigramBackend(bad_draft)) if kind == "model" else NgramDrafter(2, 1)
    engine = Engine(target, drafter, SpecConfig(k=3))
    prompt = "0 1 2 3 4 5 0 1 2 3 4 5 0"
    counts = np.zeros((V, V))
    for seed in range(n):
        cfg = GenerateConfig(max_tokens=2, sampling=SamplingConfig(s.temperature, s.top_k, s.top_p, seed))
        a, b = engine.generate(prompt, cfg).tokens
        counts[a, b] += 1
    expected = _pair_distribution(table, s, prev=0).ravel() * n
    keep = expected > 0
    assert counts.ravel()[~keep].sum() == 0  # nothing outside top-k / top-p ever appears
    assert chisquare(counts.ravel()[keep], expected[keep]).pvalue > 0.001
    assert engine.stats.n_drafted > 0
