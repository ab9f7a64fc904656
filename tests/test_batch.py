"""Batched decoding on llama.cpp with tiny GGUF models: sequences in one cache, lockstep drafting,
chunked prefill, load-aware K; outputs equal to each request decoded alone."""

from __future__ import annotations

import numpy as np
import pytest
from tiny import build_tokenizer, low_rank_noise, random_qwen2, write_tiny_gguf

from draftwise.backends.base import Feed
from draftwise.config import GenerateConfig, SpecConfig
from draftwise.drafters.model import ModelDrafter
from draftwise.engine import PACK, Batch, Engine, Run
from draftwise.policy import FixedK
from draftwise.policy.load import CostTable, LoadAwareK, LoadParams

# Sequences share one unified KV cache, and a verify carries other sequences' tokens: where a
# sequence's cells lie and how many tokens a decode holds change the order of llama.cpp's sums,
# which moves these models' logits a little. Measured over 80 random batch compositions (K 0..12,
# chunked or whole prompts, a late joiner): 20 outputs left the lone run, at top-2 margins from
# 0.009 to 0.073. Outputs must match the lone run up to a position where its margin is below TIE.
TIE = 0.1
PROMPTS = ["the quick fox return tokens", "def range print", "draft target verifies the dog",
           "if else for lazy pivot sleeps return the quick", "tokens"]


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> tuple[str, str]:
    """(target, draft): a random Qwen2 target (Q8_0) and a low-rank perturbed copy as its draft."""
    root = tmp_path_factory.mktemp("batch-tiny")
    tok = build_tokenizer(root / "tok")
    sd = random_qwen2(len(tok), seed=0)
    target = write_tiny_gguf(root / "target.gguf", root / "tok", tok, sd)
    draft = write_tiny_gguf(root / "draft.gguf", root / "tok", tok, low_rank_noise(sd, 0.1, 2, 1))
    return str(target), str(draft)


class ModelledCost(CostTable):
    """A cost table that records cost(n) whatever was measured."""

    def __init__(self, cost):
        p = LoadParams()
        super().__init__(p.decay, p.slope)
        self.cost = cost

    def observe(self, n: int, seconds: float) -> None:
        super().observe(n, self.cost(n))


class SteadyLoad(LoadAwareK):
    """Load-aware K fed modelled costs (the CPU's shape: a decode of n target tokens 108 ms + 12
    ms per token; a draft decode of m sequences 20 + 4 ms per sequence) in place of measured ones,
    so its choices, and the batches they make, do not depend on this machine's timing."""

    def __init__(self):
        super().__init__()
        self.target = ModelledCost(lambda n: 0.108 + 0.012 * (n - 1))
        self.draft = ModelledCost(lambda m: 0.02 + 0.004 * m)


def engine(ggufs, n_seq: int, k: int = 3) -> Engine:
    from draftwise.backends.llamacpp import LlamaCppBackend

    t, d = (LlamaCppBackend(p, n_ctx=256, threads=1, n_seq=n_seq) for p in ggufs)
    return Engine(t, ModelDrafter(d), SpecConfig(k=k))


@pytest.fixture(scope="module")
def alone(ggufs) -> dict:
    """Each prompt's greedy generation (tokens, margins), decoded alone by a one-sequence engine."""
    eng = engine(ggufs, 1)
    return {p: eng.generate(p, GenerateConfig(max_tokens=40), trace_margins=True)
            for p in PROMPTS}


def same(tokens: list[int], ref) -> bool:
    """tokens equal ref.tokens, or up to where ref chose at a near-tie (margin < TIE)."""
    i = next((i for i, (a, b) in enumerate(zip(tokens, ref.tokens)) if a != b), None)
    if i is None:
        return tokens == ref.tokens
    return ref.margins[i] < TIE


def test_sequences_are_isolated(ggufs):
    """Three sequences in one decode; rolling one back and feeding it other tokens leaves the
    others' caches as they were: their next logits equal a one-sequence backend's."""
    from draftwise.backends.llamacpp import LlamaCppBackend

    multi = LlamaCppBackend(ggufs[0], n_ctx=256, threads=1, n_seq=3)
    ids = [multi.tokenize(p) for p in PROMPTS[:3]]
    rows = multi.forward_many([Feed(s, x, 2) for s, x in enumerate(ids)])
    assert [r.shape for r in rows] == [(2, multi.vocab.n_vocab)] * 3
    assert [multi.seq_past(s) for s in range(3)] == [len(x) for x in ids]
    multi.rollback_seq(1, 2)
    multi.forward_many([Feed(1, ids[2][:5], 1)])
    assert [multi.seq_past(s) for s in range(3)] == [len(ids[0]), 7, len(ids[2])]
    after = multi.forward_many([Feed(0, [7], 1), Feed(2, [9], 1), Feed(1, [11], 1)])
    for seq, x, tail in ((0, ids[0], 7), (2, ids[2], 9), (1, ids[1][:2] + ids[2][:5], 11)):
        one = LlamaCppBackend(ggufs[0], n_ctx=256, threads=1)
        ref = one.forward([*x, tail], 1)[0]
        got = after[[0, 2, 1].index(seq)][0]
        np.testing.assert_allclose(got, ref, atol=1e-3 * np.abs(ref).max())
        assert got.argmax() == ref.argmax()
        one.close()
    # a sequence of the single-sequence API is sequence 0
    assert multi.n_past == multi.seq_past(0)


def drive(batch: Batch, runs: list[Run], join_at: dict[int, Run] | None = None) -> int:
    """Step until every run is done (runs in join_at are added at that step); returns steps."""
    for r in runs:
        batch.add(r)
    pending, steps = dict(join_at or {}), 0
    while any(not r.done for r in batch.runs) or pending:
        if steps in pending:
            batch.add(pending.pop(steps))
        batch.step()
        steps += 1
        for r in [r for r in batch.runs if r.done]:
            batch.remove(r)
    return steps


@pytest.mark.parametrize("chunk", [None, 3])
def test_concurrent_greedy_equals_alone(ggufs, alone, chunk):
    """Four greedy runs decode together (one joins mid-way, its prompt fed in chunks beside the
    others' rounds; one with its own K), load-aware K for the rest: every output is the one
    decoded alone."""
    eng = engine(ggufs, 4)
    batch = Batch(eng, n_seq=4, chunk=chunk, load=SteadyLoad())
    cfg = GenerateConfig(max_tokens=40)
    runs = [Run(eng, eng.prompt_ids(p), cfg, None) for p in PROMPTS[:2]]
    runs.append(Run(eng, eng.prompt_ids(PROMPTS[2]), cfg, FixedK(5)))
    late = Run(eng, eng.prompt_ids(PROMPTS[3]), cfg, None)
    drive(batch, runs, {4: late})
    for p, r in zip(PROMPTS, [*runs, late]):
        assert same(r.tokens, alone[p]), p
        assert r.stats.n_drafted > 0 and r.stats.n_accepted < r.stats.n_drafted  # real rollbacks
    assert batch.free == 4


@pytest.mark.parametrize("chunk", [None, 64])
def test_a_new_run_gets_its_first_token_in_the_step_that_finishes_its_prompt(ggufs, chunk):
    """Prompts arriving together are fed one per step, each finished before the next starts
    (however much room the step has); a run's first token (the target's own, k = 0) comes in the
    step that finishes its prompt, and the runs already decoding take one token each (k = 0)
    meanwhile. The draft model gets no prompt until no prompt is fed, then all of them."""
    eng = engine(ggufs, 3)
    ids = [eng.prompt_ids(" ".join(PROMPTS[i:] + PROMPTS[:i])) for i in range(3)]
    assert min(len(x) for x in ids) > PACK
    batch = Batch(eng, n_seq=3, chunk=chunk, load=SteadyLoad())
    cfg = GenerateConfig(max_tokens=40)
    runs = [Run(eng, x, cfg, None) for x in ids]
    for r in runs:
        batch.add(r)
    draft = eng.drafter.model_backend()
    for i in range(3):  # step i finishes prompt i; runs 0..i-1 decode one token each
        stepped = batch.step()
        assert [run for run, _ in stepped] == runs[:i] + [runs[i]]
        assert all(r.k == 0 and len(r.tokens) == 1 for _, r in stepped)
        assert [r.n_fed for r in runs] == [len(x) - 1 if j <= i else 0 for j, x in enumerate(ids)]
        assert [draft.seq_past(s) for s in range(3)] == [0, 0, 0]
    stepped = batch.step()  # all prompts in: the draft catches up, speculation resumes
    assert len(stepped) == 3 and max(r.k for _, r in stepped) > 0
    assert all(draft.seq_past(r.seq) >= len(r.ids) - 1 for r in runs)
    while not all(r.done for r in runs):
        batch.step()
    for r in runs:
        ref = eng.generate(r.ids, cfg, trace_margins=True)
        assert same(r.tokens, ref)


def test_short_prompts_share_a_step(ggufs):
    """Prompts of at most PACK tokens in all are fed in one step: each gets its first token."""
    eng = engine(ggufs, 3)
    ids = [eng.prompt_ids(p) for p in (PROMPTS[4], PROMPTS[1], PROMPTS[0])]
    assert len(ids[0]) + len(ids[1]) - 2 <= PACK < sum(len(x) - 1 for x in ids)
    batch = Batch(eng, n_seq=3, load=SteadyLoad())
    runs = [Run(eng, x, GenerateConfig(max_tokens=8), None) for x in ids]
    for r in runs:
        batch.add(r)
    assert [run for run, _ in batch.step()] == runs[:2]
    assert [run for run, _ in batch.step()] == runs


def test_a_stopped_run_frees_its_sequence_mid_batch(ggufs, alone):
    """Removing a run mid-generation frees its sequence for the next one; the others go on
    unchanged."""
    eng = engine(ggufs, 2)
    batch = Batch(eng, n_seq=2, load=SteadyLoad())
    cfg = GenerateConfig(max_tokens=40)
    keep, cut = (Run(eng, eng.prompt_ids(p), cfg, None) for p in PROMPTS[:2])
    batch.add(keep)
    batch.add(cut)
    for _ in range(3):
        batch.step()
    assert not cut.done and batch.free == 0
    batch.remove(cut)
    new = Run(eng, eng.prompt_ids(PROMPTS[4]), cfg, None)
    batch.add(new)
    assert new.seq == cut.seq
    while not (keep.done and new.done):
        batch.step()
    assert same(keep.tokens, alone[PROMPTS[0]]) and same(new.tokens, alone[PROMPTS[4]])


def test_one_sequence_run_is_the_batch_of_one(ggufs, alone):
    """Engine.generate on a four-sequence engine (a Run alone) gives the one-sequence output."""
    eng = engine(ggufs, 4)
    assert eng.generate(PROMPTS[1], GenerateConfig(max_tokens=40)).tokens == \
        alone[PROMPTS[1]].tokens


def test_cost_table_interpolates_and_extrapolates():
    t = CostTable(decay=0.5, slope=0.1)
    assert t(4) is None
    t.observe(1, 0.10)
    assert t(1) == 0.10 and t(11) == pytest.approx(0.20)  # the prior slope: 10% of one per token
    t.observe(9, 0.26)
    assert t(5) == pytest.approx(0.18)  # between measured sizes: linear
    assert t(17) == pytest.approx(0.42)  # past them: their least-squares line
    t.observe(1, 0.20)
    assert t(1) == pytest.approx(0.15)  # EMA


def test_load_aware_k_turns_speculation_off_under_load():
    """With costs like the issue's CPU (1 token 108 ms, 4: 158, 8: 229) and a cheap draft, one
    sequence at alpha 0.8 speculates (K = 2: 2.44 tokens in 201 ms beats K = 3: 2.95 in 248 ms);
    sixteen at alpha 0.3 decode plainly; a fuller batch never drafts longer."""
    lk = LoadAwareK(LoadParams(explore_every=10**6))
    for n, t in ((1, .108), (4, .158), (8, .229), (16, .40), (32, .75), (64, 1.45)):
        lk.target.observe(n, t)
    for m, t in ((1, .03), (16, .12)):
        lk.draft.observe(m, t)
    one = lk.choose([0.8])
    assert one == 2
    assert lk.choose([0.3] * 16) == 0
    assert lk.choose([0.8] * 4) <= one
    assert lk.choose([0.99] * 4) > 0  # a draft that is nearly always right still pays
