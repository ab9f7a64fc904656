"""HybridDrafter: n-gram lookup when confident, else the draft model."""

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


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_engine_with_hybrid_matches_target(tiny_models, temperature):
    """Greedy: the same tokens as AR; sampling runs with n-gram (one-hot q) and model rounds."""
    from draftwise.backends.transformers import TransformersBackend
    from draftwise.drafters.model import ModelDrafter
    from draftwise.engine import Engine

    tgt_dir, draft_dir = tiny_models
    target, draft = TransformersBackend(str(tgt_dir)), TransformersBackend(str(draft_dir))
    prompt = "for i in range(10):\n    print(i * i)\nfor i in range"  # the suffix repeats
    cfg = GenerateConfig(max_tokens=48, sampling=SamplingConfig(temperature=temperature, seed=3))
    hyb = HybridDrafter(ModelDrafter(draft))
    out = Engine(target, hyb, SpecConfig(k=4)).generate(prompt, cfg)
    assert out.stats.n_generated > 0
    assert hyb.rounds["ngram"] > 0 and hyb.rounds["model"] > 0
    if temperature == 0:
        assert out.tokens == Engine(target).generate(prompt, cfg).tokens
