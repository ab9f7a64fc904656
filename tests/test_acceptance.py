"""Lenient (lossy) acceptance modes: parsing, each rule on hand-made logits, the lenient verifiers,
and the engine reporting n_lenient and exact=False."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_verifier import GridRng
from toy import BigramBackend

from draftwise.acceptance import EXACT, Acceptance, parse_accept
from draftwise.backends.transformers import TransformersBackend
from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.drafters.model import ModelDrafter
from draftwise.engine import Batch, Engine, Run
from draftwise.errors import DraftwiseError
from draftwise.policy import FixedK
from draftwise.verifier import verify, verify_greedy, verify_sampling

GREEDY, SAMPLED = SamplingConfig(), SamplingConfig(1.0)


# -- parsing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, name", [("exact", "exact"), (" TopK:4 ", "topk:4"),
                                        ("ratio:0.25", "ratio:0.25"), ("ratio:.5", "ratio:0.5"),
                                        ("typical:0.09,0.2", "typical:0.09,0.2")])
def test_parse_canonical_names(spec, name):
    assert parse_accept(spec).name == name


@pytest.mark.parametrize("spec", ["ratio:0.123456789", "ratio:0.00001", "typical:0.0001,0.7"])
def test_canonical_name_parses_back_to_the_same_rule(spec):
    rule = parse_accept(spec)
    assert parse_accept(rule.name) == rule


def test_typical_delta_defaults_to_sqrt_eps():
    a = parse_accept("typical:0.09")
    assert (a.eps, a.delta) == (0.09, math.sqrt(0.09))


@pytest.mark.parametrize("spec", ["", "lossy", "topk", "topk:1", "topk:0", "topk:2.5", "ratio:0",
                                  "ratio:1", "ratio:1.5", "ratio:-0.1", "ratio:x", "typical:",
                                  "typical:0", "typical:1", "typical:0.1,0", "typical:0.1,1.5",
                                  "typical:0.1,0.2,0.3", "exact:1"])
def test_bad_modes_give_one_line_listing_the_forms(spec):
    with pytest.raises(DraftwiseError) as e:
        SpecConfig(accept=spec)
    msg = str(e.value)
    assert "\n" not in msg and repr(spec) in msg
    assert all(form in msg for form in ("exact", "topk:N", "ratio:L", "typical:EPS[,DELTA]"))


def test_spec_config_carries_the_parsed_rule():
    assert SpecConfig().rule == EXACT and SpecConfig().rule.exact
    assert SpecConfig.parse("auto", accept="ratio:0.5").rule == Acceptance("ratio", ratio=0.5)
    assert SpecConfig.parse("4", accept="topk:3").rule == Acceptance("topk", top_n=3)


@pytest.mark.parametrize("spec, greedy", [("topk:3", False), ("typical:0.1", True)])
def test_mode_for_the_other_decoding_is_refused(spec, greedy):
    with pytest.raises(DraftwiseError, match="greedy" if not greedy else "sampling"):
        parse_accept(spec).check(greedy)
    parse_accept(spec).check(not greedy)
    parse_accept("ratio:0.5").check(greedy)


# -- each rule on hand-made logits -----------------------------------------------------------------

def test_topk_counts_strictly_larger_logits():
    logits = np.array([3.0, 2.0, 2.0, 1.0, 0.0])
    kept = [d for d in range(5) if parse_accept("topk:2").keeps_greedy(logits, d)]
    assert kept == [0, 1, 2]  # 1 and 2 tie for second place: both are in the top 2
    kept = [d for d in range(5) if parse_accept("topk:4").keeps_greedy(logits, d)]
    assert kept == [0, 1, 2, 3]


def test_ratio_greedy_boundary_is_inclusive():
    """p(d) / max p = exp(logit_d - max logit): exactly L is kept, just below is not."""
    a = parse_accept("ratio:0.5")
    logits = np.array([0.0, math.log(0.5), math.log(0.5) - 1e-9, -5.0])
    assert [a.keeps_greedy(logits, d) for d in range(4)] == [True, True, False, False]


def test_ratio_sampling_boundary_is_inclusive():
    a = parse_accept("ratio:0.5")
    p = np.array([0.5, 0.25, 0.25 - 1e-12, 1e-12])
    assert [a.keeps_sampling(p, d) for d in range(4)] == [True, True, False, False]


def test_typical_eps_branch_is_strict():
    """Flat-ish p: DELTA * exp(-H) is large, EPS decides; p(d) == EPS is not kept (strict >)."""
    a = parse_accept("typical:0.2,0.9")
    p = np.array([0.5, 0.3, 0.2])  # H = 1.03, 0.9 exp(-H) = 0.32 > 0.2
    assert [a.keeps_sampling(p, d) for d in range(3)] == [True, True, False]


def test_typical_entropy_branch():
    """Peaked p: DELTA * exp(-H) is below EPS and decides."""
    p = np.array([0.7, 0.2, 0.1])
    h = -(p * np.log(p)).sum()
    thr = 0.3 * math.exp(-h)  # 0.1346
    assert 0.1 < thr < 0.2
    a = parse_accept("typical:0.5,0.3")
    assert [a.keeps_sampling(p, d) for d in range(3)] == [True, True, False]
    # zeros (top-k / top-p) do not enter the entropy, and are never kept
    a = parse_accept("typical:0.5,0.3")
    p0 = np.array([0.7, 0.0, 0.2, 0.1, 0.0])
    assert [a.keeps_sampling(p0, d) for d in range(5)] == [True, False, True, False, False]


# -- the lenient verifiers -------------------------------------------------------------------------

def test_greedy_lenient_counts_what_exact_would_reject():
    logits = np.array([[5.0, 4.0, 0.0, 0.0],   # d=0: argmax, kept exactly
                       [4.0, 5.0, 0.0, 0.0],   # d=0: second: kept by topk:2 (lenient)
                       [5.0, 4.0, 3.0, 0.0],   # d=2: third: rejected, the target says 0
                       [0.0, 0.0, 0.0, 9.0]])
    v = verify_greedy([0, 0, 2], logits)
    assert (v.n_accepted, v.token, v.n_lenient) == (1, 1, 0)
    v = verify_greedy([0, 0, 2], logits, parse_accept("topk:2"))
    assert (v.n_accepted, v.token, v.n_lenient) == (2, 0, 1)
    v = verify_greedy([0, 0, 2], logits, parse_accept("topk:3"))
    assert (v.n_accepted, v.token, v.n_lenient) == (3, 3, 2)  # all kept, then the bonus
    v = verify_greedy([0, 0, 2], logits, parse_accept("ratio:0.5"))  # e^-1 < 0.5
    assert (v.n_accepted, v.token, v.n_lenient) == (1, 1, 0)


def test_sampling_lenient_keeps_by_rule_and_resamples_from_p():
    p = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])  # draft 2, one-hot q: exact keeps iff u < 0.2
    keep, strict = parse_accept("typical:0.1,0.9"), parse_accept("typical:0.25,0.9")
    v = verify_sampling([2], None, p, GridRng(0.1, 0.6), keep)  # exact test passes
    assert (v.n_accepted, v.n_lenient) == (1, 0)
    v = verify_sampling([2], None, p, GridRng(0.9, 0.6), keep)  # only the rule keeps it
    assert (v.n_accepted, v.n_lenient) == (1, 1)
    # rejected by both: the token comes from p (CDF 0.5, 0.8: 0.6 -> 1), not from the residual
    # p without the draft (0.6 x 0.8 = 0.48 -> 0), which exact verification uses.
    v = verify_sampling([2], None, p, GridRng(0.9, 0.6), strict)
    assert (v.n_accepted, v.token, v.n_lenient) == (0, 1, 0)
    assert verify_sampling([2], None, p, GridRng(0.9, 0.6)).token == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["ratio:0.3", "typical:0.09", "typical:0.3,0.5"]))
def test_sampling_lenient_keeps_at_least_what_exact_keeps(seed, mode):
    """Same uniform draws: every prefix exact verification keeps, the lenient mode keeps too."""
    rng = np.random.default_rng(seed)
    V, K = 6, 4
    p, q = rng.dirichlet(np.ones(V), K + 1), rng.dirichlet(np.ones(V) * 0.5, K)
    draft = [int(rng.choice(V, p=q[i])) for i in range(K)]
    exact = verify_sampling(draft, q, p, np.random.default_rng(seed))
    lenient = verify_sampling(draft, q, p, np.random.default_rng(seed), parse_accept(mode))
    gained = lenient.n_accepted - exact.n_accepted
    assert gained >= 0
    assert (gained > 0) <= lenient.n_lenient <= gained  # the first extra token is a lenient one


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_verify_exact_is_todays_path(seed, greedy):
    """verify with the exact mode returns what verify_greedy / verify_sampling return, drawing the
    same random numbers."""
    rng = np.random.default_rng(seed)
    V, K = 7, 3
    logits = rng.normal(size=(K + 1, V)) * 2
    s = GREEDY if greedy else SamplingConfig(0.8, top_k=5)
    q = rng.dirichlet(np.ones(V), K)
    draft = [int(x) for x in rng.integers(V, size=K)]
    r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
    from draftwise.sampling import probs

    want = verify_greedy(draft, logits) if greedy else verify_sampling(draft, q, probs(logits, s), r1)
    assert verify(draft, q, logits, s, r2, EXACT) == want
    assert want.n_lenient == 0 and r1.random() == r2.random()


# -- the engine ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(tiny_models):
    t, d = tiny_models
    return TransformersBackend(str(t)), TransformersBackend(str(d))


@pytest.mark.parametrize("mode", ["topk:3", "ratio:0.5"])
def test_engine_greedy_lenient_on_tiny_models(pair, mode):
    """Each committed token is the target's argmax or one the rule keeps; tokens that are not the
    argmax are exactly the lenient ones."""
    target, draft = pair
    rule = parse_accept(mode)
    engine = Engine(target, ModelDrafter(draft), SpecConfig(k=4, accept=mode))
    n_lenient = 0
    for prompt in ["def quicksort(a):\n", "The quick brown fox", "for i in range(10):\n"]:
        gen = engine.generate(prompt, GenerateConfig(max_tokens=30))
        ids = target.tokenize(prompt)
        target.rollback(0)
        rows = target.forward(ids + gen.tokens[:-1], len(gen.tokens))[-len(gen.tokens):]
        not_argmax = [i for i, t in enumerate(gen.tokens) if int(np.argmax(rows[i])) != t]
        assert all(rule.keeps_greedy(rows[i], gen.tokens[i]) for i in not_argmax)
        assert len(not_argmax) == gen.stats.n_lenient <= gen.stats.n_accepted
        assert not gen.exact and gen.stats.accept == mode
        n_lenient += gen.stats.n_lenient
    assert n_lenient > 0


def test_engine_exact_reports_exact(pair):
    target, draft = pair
    gen = Engine(target, ModelDrafter(draft), SpecConfig(k=3)).generate(
        "The quick brown fox", GenerateConfig(max_tokens=20))
    assert gen.exact and gen.stats.n_lenient == 0 and gen.stats.to_dict()["exact"] is True


def test_engine_sampling_lenient_on_bigram():
    """Typical acceptance while sampling: lenient tokens appear, each kept token the rule or the
    exact test kept; the per-run mode overrides the engine's."""
    rng = np.random.default_rng(1)
    table = rng.normal(scale=1.5, size=(6, 6))
    draft = table + rng.normal(scale=1.5, size=(6, 6))
    engine = Engine(BigramBackend(table), ModelDrafter(BigramBackend(draft)), SpecConfig(k=3))
    s = SamplingConfig(1.0, seed=0)
    exact = engine.generate("0 1 2", GenerateConfig(max_tokens=200, sampling=s))
    assert exact.stats.exact and exact.stats.n_lenient == 0
    gen = engine.generate("0 1 2", GenerateConfig(max_tokens=200, sampling=s),
                          accept=parse_accept("typical:0.3,0.6"))
    st_ = gen.stats
    assert not st_.exact and st_.accept == "typical:0.3,0.6"
    assert 0 < st_.n_lenient <= st_.n_accepted and st_.alpha > exact.stats.alpha
    with pytest.raises(DraftwiseError, match="greedy decoding"):
        engine.generate("0 1 2", GenerateConfig(sampling=s), accept=parse_accept("topk:2"))


def test_each_sequence_of_a_batched_round_has_its_own_mode():
    """Two greedy runs of one prompt share batched rounds, one exact and one topk:3: the exact
    one is AR's output with no lenient token, the lenient one keeps drafts that are not the
    argmax (each one the rule keeps) and equals its output alone."""
    rng = np.random.default_rng(3)
    table = rng.normal(scale=1.5, size=(8, 8))
    draft = table + rng.normal(scale=1.5, size=(8, 8))
    cfg, topk = GenerateConfig(max_tokens=60), parse_accept("topk:3")

    def engine(n_seq: int) -> Engine:
        return Engine(BigramBackend(table, n_seq=n_seq),
                      ModelDrafter(BigramBackend(draft, n_seq=n_seq)), SpecConfig(k=3))

    ar = Engine(BigramBackend(table)).generate("0 1 2", cfg)
    alone = engine(1).generate("0 1 2", cfg, FixedK(3), accept=topk)
    eng = engine(2)
    ids = eng.prompt_ids("0 1 2")
    exact, lenient = Run(eng, ids, cfg, FixedK(3)), Run(eng, ids, cfg, FixedK(3), accept=topk)
    batch = Batch(eng, n_seq=2)
    batch.add(exact)
    batch.add(lenient)
    shared_lenient = 0  # lenient tokens of the rounds both runs shared
    while not (exact.done and lenient.done):
        rounds = {id(run): r for run, r in batch.step()}
        assert id(exact) not in rounds or rounds[id(exact)].n_lenient == 0
        if len(rounds) == 2:
            shared_lenient += rounds[id(lenient)].n_lenient
    assert shared_lenient > 0
    assert exact.tokens == ar.tokens and exact.stats.exact and exact.stats.n_lenient == 0
    assert exact.stats.n_accepted < exact.stats.n_drafted  # exact verification rejected drafts
    assert lenient.tokens == alone.tokens != ar.tokens
    assert lenient.stats.accept == "topk:3" and not lenient.stats.exact
    prev = [ids[-1], *lenient.tokens[:-1]]
    not_argmax = [(p, t) for p, t in zip(prev, lenient.tokens) if int(np.argmax(table[p])) != t]
    assert all(topk.keeps_greedy(table[p], t) for p, t in not_argmax)
    assert len(not_argmax) == lenient.stats.n_lenient == alone.stats.n_lenient


def test_stats_line_says_lossy():
    from draftwise.stats import Stats

    st = Stats(accept="ratio:0.5")
    st.record_round(4, 3, 4, n_lenient=2)
    assert not st.exact and st.n_lenient == 2
    assert st.line().endswith("| accept ratio:0.5 (lossy): 2 lenient")
    assert "lossy" not in Stats().line() and Stats().to_dict()["exact"] is True
