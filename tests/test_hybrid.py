"""HybridDrafter: n-gram lookup when confident, else the draft model."""

from dataclasses import replace

import numpy as np
import pytest

from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.drafters.base import Draft, Drafter
from draftwise.drafters.hybrid import HybridDrafter, HybridParams, hybrid_base
from draftwise.drafters.ngram import NgramDrafter

GREEDY = SamplingConfig()
RNG = np.random.default_rng(0)


class FakeModel(Drafter):
    """Proposes 900, 901, ... and counts calls and feedback."""

    def __init__(self):
        self.calls, self.feedbacks, self.begun = 0, [], None

    def begin(self, ctx):
        self.begun = list(ctx)

    def propose(self, ctx, k, sampling, rng):
        self.calls += 1
        return Draft(list(range(900, 900 + k)), None)

    def feedback(self, n_drafted, n_accepted):
        self.feedbacks.append((n_drafted, n_accepted))


REPEAT = [1, 2, 3, 4, 5, 6, 1, 2, 3]  # suffix 1 2 3 occurred before, followed by 4 5 6


def test_confident_ngram_skips_the_model():
    model = FakeModel()
    h = HybridDrafter(model)
    d = h.propose(REPEAT, 3, GREEDY, RNG)
    assert d.tokens == [4, 5, 6] and d.q is None and h.source == "ngram"
    assert model.calls == 0
    h.feedback(3, 3)
    assert h.rounds == {"ngram": 1, "model": 0} and model.feedbacks == []


def test_no_match_uses_the_model():
    model = FakeModel()
    h = HybridDrafter(model)
    d = h.propose([1, 2, 3, 4, 5], 3, GREEDY, RNG)
    assert d.tokens == [900, 901, 902] and h.source == "model" and model.calls == 1
    h.feedback(3, 1)
    assert model.feedbacks == [(3, 1)]


def test_short_match_is_not_confident():
    h = HybridDrafter(FakeModel(), params=HybridParams(min_match=3))
    # only the 2-gram "2 3" repeats here
    assert h.propose([2, 3, 9, 8, 2, 3], 3, GREEDY, RNG).tokens == [900, 901, 902]


def test_min_tokens_relaxed_when_k_is_small():
    p = HybridParams(min_tokens=3)
    ctx = [4, 4, 4]  # the 2-gram "4 4" matched just before the end: one token follows it
    assert HybridDrafter(FakeModel(), params=p).propose(ctx, 1, GREEDY, RNG).tokens == [4]
    assert HybridDrafter(FakeModel(), params=p).propose(ctx, 3, GREEDY, RNG).tokens == [900, 901,
                                                                                        902]


def test_rejected_lookups_fall_back_to_the_model_then_retry():
    p = HybridParams(min_alpha=0.5, decay=0.5, recover=0.1)
    h = HybridDrafter(FakeModel(), params=p)
    for _ in range(2):  # the lookup fails twice: its rate falls 1 -> 0.5 -> 0.25
        assert h.propose(REPEAT, 3, GREEDY, RNG).tokens == [4, 5, 6]
        h.feedback(3, 0)
    assert h.ngram_alpha < 0.5
    assert h.propose(REPEAT, 3, GREEDY, RNG).tokens == [900, 901, 902]
    for _ in range(10):
        h.feedback(3, 3)  # model rounds let the lookup's rate drift back up
        h.propose(REPEAT, 3, GREEDY, RNG)
    assert h.source == "ngram"


def test_feedback_without_a_proposal_is_ignored():
    h = HybridDrafter(FakeModel())
    h.feedback(0, 0)  # a K = 0 round: the engine still reports it
    assert h.rounds == {"ngram": 0, "model": 0}


def test_begin_and_reset_reach_both():
    model = FakeModel()
    h = HybridDrafter(model, NgramDrafter())
    h.propose(REPEAT, 2, GREEDY, RNG)
    h.begin([1, 2])
    assert model.begun == [1, 2]
    h.reset()
    assert h.ngram._indexed == 0 and h.ngram_alpha == 1.0


def test_hybrid_base():
    assert hybrid_base("ngram+qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b"
    assert hybrid_base("NGRAM+x") == "x"
    assert hybrid_base("ngram") is None and hybrid_base("ngram+") is None
    assert hybrid_base("qwen2.5-coder-0.5b") is None


@pytest.fixture(scope="module")
def tiny_pair(tiny_models):
    from draftwise.backends.transformers import TransformersBackend

    return tuple(TransformersBackend(str(d)) for d in tiny_models)


LOOP = "for i in range(10):\n    print(i * i)\nfor i in range"  # the suffix repeats


def _hybrid_run(tiny_pair, sampling: SamplingConfig, max_tokens: int = 48):
    from draftwise.drafters.model import ModelDrafter
    from draftwise.engine import Engine

    target, draft = tiny_pair
    hyb = HybridDrafter(ModelDrafter(draft))
    out = Engine(target, hyb, SpecConfig(k=4)).generate(
        LOOP, GenerateConfig(max_tokens=max_tokens, sampling=sampling))
    assert hyb.rounds["ngram"] > 0 and hyb.rounds["model"] > 0  # both sources drafted
    return out


def _greedy_ar(target, max_tokens: int = 48) -> list[int]:
    from draftwise.engine import Engine

    return Engine(target).generate(LOOP, GenerateConfig(max_tokens=max_tokens)).tokens


def test_engine_with_hybrid_greedy_matches_target(tiny_pair):
    out = _hybrid_run(tiny_pair, GREEDY)
    assert out.tokens == _greedy_ar(tiny_pair[0]) and len(out.tokens) == 48


def test_engine_with_hybrid_sampling_at_a_one_token_nucleus_is_greedy(tiny_pair):
    """T=0.9 with top_p so small that only the top token keeps mass: p and q are one-hot, so
    rejection sampling (one-hot q for n-gram rounds, the model's q otherwise) must give exactly
    the greedy output, whatever the seed."""
    want = _greedy_ar(tiny_pair[0])
    for seed in (3, 4):
        out = _hybrid_run(tiny_pair, SamplingConfig(temperature=0.9, top_p=1e-6, seed=seed))
        assert out.tokens == want
        assert out.stats.n_accepted < out.stats.n_drafted  # n-gram drafts were rejected


def test_engine_with_hybrid_sampling_follows_the_target_distribution(tiny_pair):
    """T=0.9, top_k=3: chi-square of the first two tokens over 200 seeds (9 cells) against the
    target's own probabilities; each output has an n-gram round (the suffix repeats), then a
    model round. Exactness at multi-token depth is tests/test_engine.py's (an exact bigram)."""
    from scipy.stats import chisquare

    from draftwise.drafters.model import ModelDrafter
    from draftwise.engine import Engine
    from draftwise.sampling import probs

    target, draft = tiny_pair
    s = SamplingConfig(temperature=0.9, top_k=3)
    ids = target.tokenize(LOOP)
    target.rollback(0)
    p1 = probs(target.forward(ids, 1), s)[0]
    expected = {}
    for a in np.flatnonzero(p1):
        target.rollback(0)
        p2 = probs(target.forward(ids + [int(a)], 1), s)[0]
        expected.update({(int(a), int(b)): p1[a] * p2[b] for b in np.flatnonzero(p2)})
    hyb = HybridDrafter(ModelDrafter(draft))
    engine = Engine(target, hyb, SpecConfig(k=2))
    n = 200
    counts = dict.fromkeys(expected, 0)
    for seed in range(n):
        out = engine.generate(ids, GenerateConfig(max_tokens=3, sampling=replace(s, seed=seed)))
        counts[tuple(out.tokens[:2])] += 1  # a KeyError: a token outside the target's top 3
    assert hyb.rounds["ngram"] >= n and hyb.rounds["model"] >= n // 2
    cells = list(expected)
    p = chisquare([counts[c] for c in cells], [n * expected[c] for c in cells]).pvalue
    assert p > 1e-3, (counts, expected)
