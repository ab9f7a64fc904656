"""The engine on tiny random HF models and an exact bigram model.

Greedy outputs are checked against transformers' own `generate` (an independent decoding loop),
sampled outputs against the bigram model's closed-form distribution over three tokens.
"""

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import chisquare
from toy import BigramBackend

import draftwise.verifier
from draftwise.backends.transformers import TransformersBackend
from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.drafters.hybrid import HybridDrafter
from draftwise.drafters.model import ModelDrafter
from draftwise.drafters.ngram import NgramDrafter
from draftwise.engine import Batch, Engine, Run
from draftwise.errors import DraftwiseError
from draftwise.policy import FixedK
from draftwise.sampling import probs, sample
from draftwise.verifier import Verdict

PROMPTS = ["def quicksort(a):\n", "The quick brown fox", "for i in range(10):\n    print(i"]
N_NEW = 40


@pytest.fixture(scope="module")
def pair(tiny_models):
    t, d = tiny_models
    return TransformersBackend(str(t)), TransformersBackend(str(d))


def hf_greedy(backend: TransformersBackend, ids: list[int], n: int) -> list[int]:
    """transformers' own greedy decoding of n tokens after ids, cut before the first EOS."""
    import torch

    with torch.inference_mode():
        out = backend.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                                    dtype=torch.long),
                                     do_sample=False, num_beams=1, max_new_tokens=n,
                                     min_new_tokens=0, pad_token_id=backend.tok.eos_token_id)
    new = out[0, len(ids):].tolist()
    eos = next((i for i, t in enumerate(new) if t in backend.vocab.eos_ids), len(new))
    return new[:eos]


@pytest.fixture(scope="module")
def hf_outputs(pair):
    target = pair[0]
    return {p: hf_greedy(target, target.tokenize(p), N_NEW) for p in PROMPTS}


def test_autoregressive_matches_hf_generate(pair, hf_outputs):
    target = pair[0]
    for p in PROMPTS:
        out = Engine(target).generate(p, GenerateConfig(max_tokens=N_NEW))
        assert out.tokens == hf_outputs[p]
        assert len(out.tokens) == N_NEW  # no EOS in these: the comparison covers all 40 tokens
        assert out.text == target.detokenize(hf_outputs[p])


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("kind", ["model", "ngram"])
def test_greedy_speculation_matches_hf_generate(pair, hf_outputs, k, kind):
    target, draft = pair
    drafter = ModelDrafter(draft) if kind == "model" else NgramDrafter()
    engine = Engine(target, drafter, SpecConfig(k=k))
    drafted = accepted = 0
    for p in PROMPTS:
        out = engine.generate(p, GenerateConfig(max_tokens=N_NEW))
        assert out.tokens == hf_outputs[p]
        st = out.stats
        assert st.n_generated == len(out.tokens) == N_NEW
        assert 0 <= st.n_accepted <= st.n_drafted <= k * st.n_rounds
        assert st.tau == pytest.approx(st.n_generated / st.n_rounds)
        drafted += st.n_drafted
        accepted += st.n_accepted
    assert drafted > 0
    if kind == "model":
        assert accepted > 0  # the noisy copy agrees often
        if k > 1:
            assert accepted < drafted  # and sometimes not: the rejection path ran too


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
    full = engine.generate("The quick", GenerateConfig(max_tokens=30))
    stop = full.text[5:8]
    cut = engine.generate("The quick", GenerateConfig(max_tokens=30, stop=(stop,)))
    assert cut.text == full.text[:full.text.index(stop)] and cut.stats.finish_reason == "stop"
    # A stop string inside a round: the tokens and their count (usage) are plain decoding's, up
    # to the token that completes the stop string, not the whole round's. (Stop strings are
    # text: none with the replacement character this random model's stray bytes decode to.)
    ar = Engine(target)
    n_mid = 0
    stops = [full.text[i:i + 2] for i in range(1, 24) if "\ufffd" not in full.text[i:i + 2]]
    assert len(stops) >= 5
    for stop in stops:
        cfg = GenerateConfig(max_tokens=30, stop=(stop,))
        got, want = engine.generate("The quick", cfg), ar.generate("The quick", cfg)
        assert got.text == want.text and got.tokens == want.tokens
        assert got.stats.n_generated == want.stats.n_generated == len(want.tokens)
        n_mid += got.stats.n_rounds < want.stats.n_rounds
    assert n_mid > 0
    eos_engine = Engine(target, ModelDrafter(draft), SpecConfig(k=3))
    eos_id = full.tokens[3]  # pretend this token ends generation
    object.__setattr__(target.vocab, "eos_ids", frozenset([eos_id]))
    try:
        out = eos_engine.generate("The quick", GenerateConfig(max_tokens=30))
    finally:
        object.__setattr__(target.vocab, "eos_ids", frozenset([target.tok.eos_token_id]))
    assert out.tokens == full.tokens[:3] and out.stats.finish_reason == "stop"


class SpmBigram(BigramBackend):
    """Decodes as SentencePiece does: a text's first token loses its leading space."""

    def detokenize(self, ids):
        return super().detokenize(ids)[1:]


def test_stop_string_from_the_first_output_space():
    # The stop string is the output's first two tokens, leading space included: a speculative
    # round completes it mid-round, and cutting back to plain decoding's tokens must read the
    # output as it follows the prompt (decoded alone, SentencePiece drops that space).
    table = 3 * np.random.default_rng(1).normal(size=(8, 8))
    engine = Engine(SpmBigram(table), ModelDrafter(SpmBigram(table)), SpecConfig(k=3))
    full = engine.generate("1 2", GenerateConfig(max_tokens=12))
    stop = "".join(f" {t}" for t in full.tokens[:2])
    assert full.text.startswith(stop)
    cfg = GenerateConfig(max_tokens=12, stop=(stop,))
    got, want = engine.generate("1 2", cfg), Engine(SpmBigram(table)).generate("1 2", cfg)
    assert got.text == want.text == "" and got.stats.finish_reason == "stop"
    assert got.tokens == want.tokens == full.tokens[:2]
    # the round that completed the stop string had accepted more tokens than were kept
    assert got.stats.n_generated == 2 and got.stats.n_accepted >= 2


def test_context_limit_and_long_prompt():
    table = np.random.default_rng(0).normal(size=(8, 8))
    engine = Engine(BigramBackend(table, n_ctx=20), NgramDrafter(), SpecConfig(k=4))
    out = engine.generate("1 2 3 1 2 3", GenerateConfig(max_tokens=100))
    assert out.stats.finish_reason == "length" and 6 + len(out.tokens) <= 20
    with pytest.raises(DraftwiseError, match="context holds 20"):
        engine.generate(" ".join(["1"] * 25), GenerateConfig())


# -- sampling: the output distribution over three tokens, drafted three at a time ------------------

V, N_RUNS, N_POS = 6, 4000, 3
PROMPT = "0 1 2 3 4 5 0 1 2 3 4 5 0"  # ends with 0; the n-gram lookup proposes 1 2 3
SETTINGS = [SamplingConfig(1.0), SamplingConfig(0.7, top_k=4), SamplingConfig(1.3, top_p=0.8)]
SETTING_IDS = ["t1", "topk", "topp"]


def _tables():
    """(target, draft) bigram logits [V, V]. The draft agrees about half the time (sum of
    min(p, q) 0.4-0.9 per row): often enough that all three draft positions are reached, seldom
    enough that each sees many rejections."""
    rng = np.random.default_rng(1)
    table = rng.normal(scale=1.5, size=(V, V))
    return table, table + rng.normal(scale=1.5, size=(V, V))


def _exact_joint(table, s: SamplingConfig, prev: int) -> np.ndarray:
    """P(x2, x3, x4 | prev) [V, V, V] of the bigram target under s: the three tokens after the
    first (a run's first token is the target's own, from its prompt's step; these are drafted)."""
    p = probs(table, s)  # [V, V]: row x -> distribution of the next token
    return np.einsum("z,za,ab,bc->abc", p[prev], p, p, p)


def _pooled_pvalue(counts: np.ndarray, expected: np.ndarray) -> float:
    """Chi-square p-value; cells expected below 5 are pooled into one (zero cells must be empty)."""
    c, e = counts.ravel(), expected.ravel()
    assert c[e == 0].sum() == 0, "a token outside top-k / top-p was sampled"
    c, e = c[e > 0], e[e > 0]
    small = e < 5
    obs, exp = c[~small], e[~small]
    if small.any():
        obs, exp = np.append(obs, c[small].sum()), np.append(exp, e[small].sum())
    return float(chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


def _pvalues(counts: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """The joint of the three positions and each position's marginal."""
    out = {"joint": _pooled_pvalue(counts, expected)}
    for i in range(N_POS):
        axes = tuple(j for j in range(N_POS) if j != i)
        out[f"position {i}"] = _pooled_pvalue(counts.sum(axis=axes), expected.sum(axis=axes))
    return out


def _sample_runs(engine: Engine, s: SamplingConfig):
    """counts [V, V, V] of the three tokens after the first over N_RUNS seeds, and the summed
    Stats counters (drafted, accepted, drafted_at [K], accepted_at [K])."""
    counts = np.zeros((V,) * N_POS)
    drafted = accepted = 0
    at = np.zeros((2, 8), dtype=int)
    for seed in range(N_RUNS):
        # max_tokens 5: after the first token, one round may draft K = 3 (the engine keeps one
        # token for the target)
        out = engine.generate(PROMPT, GenerateConfig(max_tokens=5, sampling=replace(s, seed=seed)))
        counts[tuple(out.tokens[1:1 + N_POS])] += 1
        st = out.stats
        drafted += st.n_drafted
        accepted += st.n_accepted
        at[0, :len(st.drafted_at)] += st.drafted_at
        at[1, :len(st.accepted_at)] += st.accepted_at
    return counts, drafted, accepted, at


def _check_multi_token_rejections(drafted, accepted, at):
    assert accepted < drafted  # rejections happened ...
    for i in range(N_POS):  # ... at each of the three draft positions, all of them reached
        assert at[0, i] > 0 and at[1, i] < at[0, i], (i, at)


@pytest.mark.parametrize("s", SETTINGS, ids=SETTING_IDS)
@pytest.mark.parametrize("kind", ["model", "ngram"])
def test_sampling_speculation_follows_target_distribution(s, kind):
    """Chi-square of three sampled tokens (joint and marginals) against the closed form, with
    drafts of three tokens; fixed seeds: deterministic."""
    table, draft = _tables()
    drafter = ModelDrafter(BigramBackend(draft)) if kind == "model" else NgramDrafter(2, 1)
    counts, drafted, accepted, at = _sample_runs(Engine(BigramBackend(table), drafter,
                                                        SpecConfig(k=3)), s)
    _check_multi_token_rejections(drafted, accepted, at)
    pv = _pvalues(counts, _exact_joint(table, s, prev=0) * N_RUNS)
    assert min(pv.values()) > 1e-3, pv


@pytest.mark.parametrize("s", SETTINGS[:2], ids=SETTING_IDS[:2])
def test_sampling_with_hybrid_drafter_follows_target_distribution(s):
    """The same with HybridDrafter: n-gram rounds (one-hot q) and model rounds in one output."""
    table, draft = _tables()
    hybrid = HybridDrafter(ModelDrafter(BigramBackend(draft)))
    counts, drafted, accepted, at = _sample_runs(Engine(BigramBackend(table), hybrid,
                                                        SpecConfig(k=3)), s)
    assert hybrid.rounds["ngram"] > 0.2 * N_RUNS and hybrid.rounds["model"] > 0.2 * N_RUNS
    _check_multi_token_rejections(drafted, accepted, at)
    pv = _pvalues(counts, _exact_joint(table, s, prev=0) * N_RUNS)
    assert min(pv.values()) > 1e-3, pv


def test_sampling_in_a_batch_follows_target_distribution():
    """Per-request sampling stays exact while other sequences share the rounds: runs of one
    setting with their own seeds, three at a time, drafting in lockstep beside a run of another
    setting and K that spans them at shifting phases (one batch of four sequences)."""
    table, draft = _tables()
    s, other_s = SETTINGS[2], SETTINGS[1]
    engine = Engine(BigramBackend(table, n_seq=4), ModelDrafter(BigramBackend(draft, n_seq=4)),
                    SpecConfig(k=3))
    ids = engine.prompt_ids(PROMPT)
    batch = Batch(engine, n_seq=4)
    counts = np.zeros((V,) * N_POS)
    drafted = accepted = done = started = 0
    at = np.zeros((2, 8), dtype=int)
    others, other = 0, None
    while done < N_RUNS:
        if other is None or other.done:
            others += 1
            other = Run(engine, ids, GenerateConfig(7, sampling=replace(other_s, seed=10**6 + others)),
                        FixedK(2))
            batch.add(other)
        while batch.free > 1 and started < N_RUNS:  # one sequence is the other's
            batch.add(Run(engine, ids, GenerateConfig(5, sampling=replace(s, seed=started)),
                          FixedK(3)))
            started += 1
        batch.step()
        for run in [r for r in batch.runs if r.done]:
            batch.remove(run)
            if run is other:
                continue
            done += 1
            counts[tuple(run.tokens[1:1 + N_POS])] += 1
            st = run.stats
            drafted, accepted = drafted + st.n_drafted, accepted + st.n_accepted
            at[0, :len(st.drafted_at)] += st.drafted_at
            at[1, :len(st.accepted_at)] += st.accepted_at
    assert others > N_RUNS / 4  # the other sequence ran all along
    _check_multi_token_rejections(drafted, accepted, at)
    pv = _pvalues(counts, _exact_joint(table, s, prev=0) * N_RUNS)
    assert min(pv.values()) > 1e-3, pv


def _residual_from_p(draft, q, p, rng, accept=None):
    """verify_sampling with a planted bug: a rejected position resamples from p instead of
    norm(max(0, p - q)), so tokens the draft over-proposes come out too often."""
    for i, d in enumerate(draft):
        q_d = 1.0 if q is None else q[i, d]
        if q_d > 0 and rng.random() * q_d < p[i, d]:
            continue
        return Verdict(i, sample(p[i], rng))
    return Verdict(len(draft), sample(p[len(draft)], rng))


def test_chi_square_catches_a_wrong_residual(monkeypatch):
    """The test above has power: with the residual taken from p the joint is rejected."""
    monkeypatch.setattr(draftwise.verifier, "verify_sampling", _residual_from_p)
    table, draft = _tables()
    counts, drafted, accepted, at = _sample_runs(
        Engine(BigramBackend(table), ModelDrafter(BigramBackend(draft)), SpecConfig(k=3)),
        SETTINGS[0])
    _check_multi_token_rejections(drafted, accepted, at)
    assert _pvalues(counts, _exact_joint(table, SETTINGS[0], prev=0) * N_RUNS)["joint"] < 1e-3
