"""`draftwise distill` on tiny GGUF models: stages, resume, export round trip, lossless drafting,
bad input; and --layers on the real Qwen 0.5B.

The tiny pair: a random Qwen2 target (2 blocks, hidden 64, byte-level BPE of 320 tokens) written
as a Q8_0 GGUF, and a draft that is the target plus a rank-2 perturbation of every linear layer
of its blocks (about half of its greedy tokens agree). LoRA can undo such a perturbation, so
distillation must raise agreement on prompts it never saw.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import NEAR_TIE
from scipy.stats import chisquare
from tiny import low_rank_noise, random_qwen2, write_tiny_gguf

from draftwise.errors import DraftwiseError

WORDS = ["def", "return", "the", "quick", "fox", "dog", "print", "range", "for", "if", "else",
         "tokens", "draft", "target", "lazy", "sleeps", "pivot", "verifies"]
NAME = "tiny-distilled"


# -- tiny GGUF models --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """target.gguf, draft.gguf (low-rank perturbed target), other.gguf (another vocabulary),
    prompts.jsonl (40 short prompts)."""
    from tiny import build_tokenizer

    root = tmp_path_factory.mktemp("distill-tiny")
    tok = build_tokenizer(root / "tok")
    sd = random_qwen2(len(tok), seed=0)
    other_tok = build_tokenizer(root / "tok2", vocab_size=290)
    r = random.Random(0)
    rows = [{"prompt": " ".join(r.choice(WORDS) for _ in range(r.randint(4, 12)))}
            for _ in range(40)]
    (root / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return {
        "target": write_tiny_gguf(root / "target.gguf", root / "tok", tok, sd),
        "draft": write_tiny_gguf(root / "draft.gguf", root / "tok", tok,
                                 low_rank_noise(sd, 0.1, 2, seed=1)),
        "other": write_tiny_gguf(root / "other.gguf", root / "tok2", other_tok,
                                 random_qwen2(len(other_tok), seed=2)),
        "prompts": root / "prompts.jsonl",
        "tok_dir": root / "tok", "tok": tok, "sd": sd,
    }


def given(tiny, **kw) -> dict:
    """Options of a fast tiny run (one llama.cpp and torch thread: tiny models gain nothing from
    more, and a shared machine makes threads wait on each other)."""
    base = dict(target=str(tiny["target"]), draft=str(tiny["draft"]), out=NAME,
                prompts=str(tiny["prompts"]), n_prompts=32, max_tokens=24, steps=150, lr=2e-2,
                lora_rank=4, eval_categories=("code",), n_eval_other=2, dtype="float32",
                threads=1, quant="q6_k")  # q6_k falls back to q8_0 on 64-wide rows: faithful
    return {**base, **kw}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A draftwise home of its own (models/ is a real directory): the registry and the exported
    files never touch the user's cache."""
    return tmp_path_factory.mktemp("distill-home")


@pytest.fixture
def in_home(home, monkeypatch) -> Path:
    monkeypatch.setenv("DRAFTWISE_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def distilled(tiny, home):
    """One full run (gen, score, train, export, eval) on the tiny pair."""
    from draftwise.distill.pipeline import run_distill

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRAFTWISE_HOME", str(home))
        res = run_distill(given(tiny))
    return res


# -- pure parts --------------------------------------------------------------------------------


def test_choose_layers():
    from draftwise.distill.gguffile import choose_layers

    assert choose_layers(24, 12) == [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23]
    assert choose_layers(24, 2) == [0, 23] and choose_layers(24, 1) == [0]
    assert choose_layers(24, 24) == list(range(24))
    assert choose_layers(24, 4, "first-last") == [0, 1, 2, 23]
    assert choose_layers(24, 3, "first") == [0, 1, 2]
    with pytest.raises(DraftwiseError, match="between 1 and the draft's 24 blocks"):
        choose_layers(24, 25)


def test_similar_span_drops_the_blocks_that_change_nothing():
    """Blocks 1-2 with zero output projections pass the residual stream through unchanged:
    keeping 2 of 4 blocks must drop exactly them."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from draftwise.distill.layers import angular_distances, similar_span

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=4, num_attention_heads=4,
                                         num_key_value_heads=2, initializer_range=0.3))
    with torch.no_grad():
        for i in (1, 2):
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
    seqs = [[1, 5, 9, 3, 7], [2, 4, 6, 8]]
    d = angular_distances(model, seqs, 2)
    assert d.shape == (3,) and d[1] < 1e-3 < min(d[0], d[2])
    assert similar_span(model, seqs, 4, 2) == [0, 3]
    assert similar_span(model, seqs, 4, 3) in ([0, 2, 3], [0, 1, 3])
    assert similar_span(model, seqs, 4, 4) == [0, 1, 2, 3]


def test_permute_is_inverted_by_unpermute():
    from draftwise.distill.hfmodel import permute, unpermute

    w = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    for heads, kv in ((4, 4), (4, 2)):
        rows = w[:64 if heads == kv else 32]
        assert np.array_equal(unpermute(permute(rows, heads, kv), heads, kv), rows)
        assert not np.array_equal(permute(rows, heads, kv), rows)


def test_divergences_on_bins_hand_computed():
    import torch

    from draftwise.distill.losses import bins, divergence

    # vocabulary of 3; the target keeps its top-1 (token 0, p = .5) and the rest (.5)
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    log_p, log_q = bins(logits, torch.tensor([[0]]), torch.log(torch.tensor([[0.5]])),
                        torch.tensor([0.5]))
    assert torch.allclose(log_q.exp(), torch.tensor([[0.25, 0.75]]))  # draft: token 0, rest
    assert divergence("tvd", log_p, log_q).item() == pytest.approx(0.25)
    fkl = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    assert divergence("fkl", log_p, log_q).item() == pytest.approx(fkl, rel=1e-5)
    rkl = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)
    assert divergence("rkl", log_p, log_q).item() == pytest.approx(rkl, rel=1e-5)
    m = np.array([0.375, 0.625])
    jsd = 0.5 * (0.5 * np.log(0.5 / m[0]) + 0.5 * np.log(0.5 / m[1])) + \
        0.5 * (0.25 * np.log(0.25 / m[0]) + 0.75 * np.log(0.75 / m[1]))
    assert divergence("jsd", log_p, log_q).item() == pytest.approx(jsd, rel=1e-5)
    for kind in ("fkl", "rkl", "tvd", "jsd"):  # equal distributions: zero
        assert divergence(kind, log_p, log_p).item() == pytest.approx(0.0, abs=1e-7)
    # top1: -log q of the target's most likely token; "the rest" never counts, however large
    assert divergence("top1", log_p, log_q).item() == pytest.approx(-np.log(0.25), rel=1e-5)
    log_p, log_q = bins(torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])),
                        torch.tensor([[2, 1]]), torch.log(torch.tensor([[0.2, 0.3]])),
                        torch.tensor([0.5]))
    assert divergence("top1", log_p, log_q).item() == pytest.approx(-np.log(0.2), rel=1e-5)


def test_bins_lower_bound_the_full_divergence():
    import torch

    from draftwise.distill.losses import bins, divergence
    from draftwise.distill.topk import top_k

    g = torch.Generator().manual_seed(0)
    t, d = torch.randn(5, 50, generator=g) * 2, torch.randn(5, 50, generator=g) * 2
    s = top_k(t.numpy(), 8)
    log_p, log_q = bins(d, torch.from_numpy(s.idx.astype(np.int64)),
                        torch.from_numpy(s.logp.astype(np.float32)), torch.from_numpy(s.rest))
    lp, lq = torch.log_softmax(t, -1), torch.log_softmax(d, -1)
    for kind in ("fkl", "rkl", "tvd", "jsd"):
        assert (divergence(kind, log_p, log_q) <= divergence(kind, lp, lq) + 1e-3).all(), kind
    # with k = V - 1 the rest is one token: the bins are the full distribution
    s = top_k(t.numpy(), 49)
    log_p, log_q = bins(d, torch.from_numpy(s.idx.astype(np.int64)),
                        torch.from_numpy(s.logp.astype(np.float32)), torch.from_numpy(s.rest))
    assert torch.allclose(divergence("fkl", log_p, log_q), divergence("fkl", lp, lq), atol=2e-3)


def test_prompt_without_gradients_same_loss(tiny):
    """prompt_grad=False runs the prompt once without gradients and attends to it as a cache:
    the loss is the same number, the LoRA still gets gradients (from the continuation's own
    positions), but not the same ones (nothing flows back through the prompt)."""
    import torch

    from draftwise.distill.gguffile import read_gguf
    from draftwise.distill.hfmodel import load_model
    from draftwise.distill.topk import top_k
    from draftwise.distill.train import Batch, make_trainable, step_loss

    torch.manual_seed(0)
    model, _ = load_model(read_gguf(str(tiny["draft"])))
    model = make_trainable(model, 4, False)
    with torch.no_grad():  # LoRA B starts at zero: give it weights so that A gets gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    params = [p for p in model.parameters() if p.requires_grad]
    rng = np.random.default_rng(0)
    ids, n_cont = rng.integers(3, 300, 20).tolist(), 8
    s = top_k(rng.normal(0, 2, (n_cont, model.config.vocab_size)), 5)
    b = Batch(ids, n_cont, torch.from_numpy(s.idx.astype(np.int64)),
              torch.from_numpy(s.logp.astype(np.float32)), torch.from_numpy(s.rest))
    got = {}
    for prompt_grad in (True, False):
        model.zero_grad()
        loss = step_loss(model, b, "fkl", autocast=False, prompt_grad=prompt_grad)
        loss.backward()
        got[prompt_grad] = float(loss.detach()), [p.grad.clone() for p in params]
    assert got[False][0] == pytest.approx(got[True][0], rel=1e-5)
    assert all(g.abs().sum() > 0 for g in got[False][1])
    assert max(float((a - b).abs().max()) for a, b in zip(got[True][1], got[False][1])) > 1e-4


def test_lora_on_the_named_modules_only(tiny):
    """--lora-modules: LoRA pairs on exactly those linear layers of every block, nothing else
    trains."""
    from draftwise.distill.gguffile import read_gguf
    from draftwise.distill.hfmodel import load_model
    from draftwise.distill.train import make_trainable

    model, _ = load_model(read_gguf(str(tiny["draft"])))
    n_blocks = model.config.num_hidden_layers
    model = make_trainable(model, 4, False, modules=("k_proj", "down_proj"))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trained) == 2 * 2 * n_blocks  # A and B of two modules per block
    assert {n.split(".")[-4] for n in trained} == {"k_proj", "down_proj"}
    assert all(".lora_A." in n or ".lora_B." in n for n in trained)


def test_report_rows_split_a_files_categories():
    from draftwise.distill.evaluate import report_row

    held = ["translation", "qa"]
    assert [report_row("trained", c, "tqa", True) for c in held] == ["tqa/translation", "tqa/qa"]
    assert report_row("trained", "translation", "tqa", False) == "tqa"
    assert report_row("other", "qa", "tqa", True) == "qa"
    assert report_row("trained", "qa", None, False) == "qa"  # built-in categories: own rows


def test_sign_test_hand_computed():
    from draftwise.distill.evaluate import sign_test

    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)  # 5 flips, all one way
    assert sign_test(3, 2) == 1.0
    assert sign_test(10, 1) == pytest.approx(2 * 12 / 2 ** 11)


def test_verdict_counts_a_loss_elsewhere_only_beyond_chance():
    """The tenth run's 3-prompt qa rows: -3.4 points on 2 flips is noise, not a loss; the same
    drop over 400 positions, all flips one way, makes the verdict mixed."""
    from draftwise.distill.evaluate import EvalResult, Tally, markdown, verdict

    def result(qa_positions, qa_flips):
        res = EvalResult({"b": "b.gguf", "a": "b.gguf + a.lora.gguf"},
                         {"tqa": "trained", "qa": "other"}, before="b", after="a")
        g, lo = qa_flips
        res.tallies = {"b": {"tqa": Tally(457, 289, 270), "qa": Tally(qa_positions, 42 + lo, 40)},
                       "a": {"tqa": Tally(457, 312, 290), "qa": Tally(qa_positions, 42 + g, 40)}}
        res.flips = {"tqa": [30, 7], "qa": [g, lo]}
        return res

    noise = result(58, (0, 2))
    assert (noise.gained, noise.lost, round(noise.delta("qa"), 1)) == (30, 7, -3.4)
    line = verdict(noise)
    assert line.startswith("verdict: better:") and "(qa: within chance)" in line
    assert "+5.0 points; 30 positions gained, 7 lost" in line
    harm = result(400, (1, 15))
    assert verdict(harm).startswith("verdict: mixed (gains where trained, loses in qa)")
    assert "| qa | other | 400 |" in markdown(harm) and "| +1/-15 |" in markdown(harm)


def test_top_k_keeps_the_largest_and_the_rest():
    from draftwise.distill.topk import top_k

    x = np.random.default_rng(0).normal(size=(4, 100)) * 3
    s = top_k(x, 5)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.array_equal(s.idx, np.argsort(-x, axis=1)[:, :5])
    np.testing.assert_allclose(np.exp(s.logp.astype(np.float64)),
                               np.take_along_axis(p, s.idx, 1), rtol=2e-3)
    np.testing.assert_allclose(s.rest, 1 - np.sort(p, 1)[:, -5:].sum(1), rtol=1e-5, atol=1e-7)


def test_batched_continuations_match_lone_decoding(tiny):
    """continue_many decodes more jobs than the backend has sequences, one batch per step: a
    greedy job's every token is the lone model's argmax (up to near-ties: batch shape moves the
    logits a little), a sampled one's is a token the lone model gives real probability; the
    same batch gives the same tokens, other seeds other tokens; the cache is left empty."""
    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.bench.advise import teacher_forced
    from draftwise.distill.data import Job, continue_many

    many = LlamaCppBackend(str(tiny["target"]), n_ctx=256, threads=1, n_seq=3)
    one = LlamaCppBackend(str(tiny["target"]), n_ctx=256, threads=1)
    try:
        prompts = [one.tokenize(t) for t in ("the quick fox verifies the lazy dog", "def pivot",
                                             "for tokens in range if else print the draft")]
        jobs = [Job(p, 0.0, 0) for p in prompts] + [Job(prompts[0], 1.0, s) for s in range(4)]
        outs = continue_many(many, jobs, 12)
        assert [continue_many(many, jobs, 12) for _ in range(2)] == [outs, outs]
        assert all(many.seq_past(s) == 0 for s in range(3))
        assert len({tuple(o) for o in outs[3:]}) > 1 and all(0 < len(o) <= 12 for o in outs)
        for j, out in zip(jobs, outs):
            logits = teacher_forced(one, j.ids, out).astype(np.float64)
            picked = logits[np.arange(len(out)), out]
            if j.temperature == 0:
                assert np.all(picked >= logits.max(1) - 0.1), (j, out)
            else:
                logp = picked - np.log(np.exp(logits).sum(1))
                assert np.all(logp > np.log(1e-4)), (j, out)
        # the prompt stays cached between continuations of it (score): same logits as cold
        cold = [teacher_forced(one, prompts[0], c) for c in outs[3:]]
        one.rollback(0)
        warm = [teacher_forced(one, prompts[0], c, cached=i > 0) for i, c in enumerate(outs[3:])]
        for a, b in zip(cold, warm):
            np.testing.assert_allclose(a, b, atol=1e-4)
    finally:
        many.close()
        one.close()


def test_scores_kept_while_decoding_match_teacher_forcing(tiny):
    """continue_scored's rows (batched, as the target decodes) give the same top-k as the score
    stage's teacher-forced pass over the finished continuation, up to the batch's rounding."""
    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.bench.advise import teacher_forced
    from draftwise.distill.data import Job, continue_many, continue_scored
    from draftwise.distill.topk import top_k

    many = LlamaCppBackend(str(tiny["target"]), n_ctx=256, threads=1, n_seq=2)
    one = LlamaCppBackend(str(tiny["target"]), n_ctx=256, threads=1)
    try:
        prompts = [one.tokenize(t) for t in ("the quick fox", "def pivot", "print the draft")]
        jobs = [Job(p, 0.0, 0) for p in prompts] + [Job(prompts[1], 1.0, 3)]
        got = continue_scored(many, jobs, 10, 6)
        assert [c for c, _ in got] == continue_many(many, jobs, 10)
        assert [s for _, s in continue_scored(many, jobs, 10, 0)] == [None] * len(jobs)
        for j, (cont, s) in zip(jobs, got):
            ref = top_k(teacher_forced(one, j.ids, cont), 6)
            assert s.idx.shape == ref.idx.shape == (len(cont), 6)
            assert np.array_equal(s.idx[:, 0], ref.idx[:, 0])
            np.testing.assert_allclose(np.exp(s.logp.astype(np.float64)),
                                       np.exp(ref.logp.astype(np.float64)), atol=0.02)
            np.testing.assert_allclose(s.rest, ref.rest, atol=0.02)
            if j.temperature == 0:  # greedy: each token is its row's top-1
                assert s.idx[:, 0].tolist() == cont
    finally:
        many.close()
        one.close()


def test_eval_continuations_cached_per_prompt(tiny, tmp_path):
    """The evaluation's target continuations are cached by position; a cached record of another
    prompt (as from another run's copied files) is decoded again, a matching one is kept. A
    decoded one comes with the rows it was decoded from: teacher-forcing it gives them again."""
    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.bench.advise import teacher_forced
    from draftwise.bench.prompts import Prompt
    from draftwise.distill.data import Split
    from draftwise.distill.evaluate import eval_prompts, target_continuation
    from draftwise.distill.rundir import RunDir

    run = RunDir(tmp_path / "run")
    split = Split([], [Prompt("a", "file", "the quick fox", chat=False)],
                  [Prompt("b", "code", "def pivot", chat=False)])
    target = LlamaCppBackend(str(tiny["target"]), n_ctx=256, threads=1)

    def conts():
        return [target_continuation(run, i, g, p, target, 8, 100)
                for i, (g, p) in enumerate(eval_prompts(split))]
    try:
        first = conts()
        assert [(r["id"], r["group"]) for r, _ in first] == [("a", "trained"), ("b", "other")]
        for rec, tl in first:
            assert 0 < len(rec["cont"]) <= 8 and tl.shape == (len(rec["cont"]), target.vocab.n_vocab)
            assert list(np.argmax(tl, axis=1)) == rec["cont"]  # greedy
            tf = teacher_forced(target, rec["prompt"], rec["cont"])
            np.testing.assert_allclose(tl, tf, atol=1e-3 * np.abs(tf).max())
        d = run.path / "eval" / "conts"
        wrong = {**first[1][0], "id": "zz", "cont": [1, 2, 3]}
        (d / "00001.json").write_text(json.dumps(wrong))
        kept = {**first[0][0], "cont": [7]}  # a matching record is trusted as it is
        (d / "00000.json").write_text(json.dumps(kept))
        again = conts()
        assert [r for r, _ in again] == [kept, first[1][0]] and again[0][1] is None
        np.testing.assert_array_equal(again[1][1], first[1][1])
        assert json.loads((d / "00001.json").read_text()) == first[1][0]
    finally:
        target.close()


def test_options_defaults_and_errors(tiny):
    from draftwise.distill.options import ADAPTER_MODULES, LORA_MODULES, DistillOptions

    o = DistillOptions(target="t", draft="d", out="x", categories=("chat", "writing"))
    assert (o.loss, o.n_prompts, o.n_eval, o.gen_temperature) == ("fkl", 14, 6, 0.0)
    assert o.categories == ("chat",)  # "writing" is chat's alias
    assert "code" in o.eval_categories and "chat" not in o.eval_categories
    assert DistillOptions(target="t", draft="d", out="x", mode="sampling").loss == "tvd"
    assert DistillOptions(target="t", draft="d", out="x", full=True).lr == 2e-5
    assert o.val_fraction == 0.1  # a stored recipe from before validation existed had none
    old = {k: v for k, v in o.to_dict().items() if k != "val_fraction"}
    assert DistillOptions.from_dict(old).val_fraction == 0.0
    assert o.lora_modules == LORA_MODULES  # all by default, attention and down_proj for an
    adapter = DistillOptions(target="t", draft="d", out="x", adapter=True)  # adapter
    assert adapter.lora_modules == ADAPTER_MODULES
    old = {k: v for k, v in adapter.to_dict().items() if k != "lora_modules"}
    assert DistillOptions.from_dict(old).lora_modules == LORA_MODULES  # as it was trained
    picked = DistillOptions(target="t", draft="d", out="x", lora_modules=("down_proj", "attn"))
    assert picked.lora_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
    assert "on q_proj,k_proj,v_proj,o_proj,down_proj" in picked.recipe()
    for kw, msg in [({"categories": ("poetry",)}, "unknown category 'poetry'"),
                    ({"n_prompts": 20}, "leaves 0 for evaluation"),
                    ({"loss": "kl"}, "--loss must be one of"),
                    ({"out": "bad/name"}, "not a usable model name"),
                    ({"out": "mine-q4_0"}, "not a usable model name"),
                    ({"prompts": "/no/such.jsonl"}, "does not exist"),
                    ({"quant": "q7"}, "quant must be one of"),
                    ({"layers": 0}, "--layers must be >= 1"),
                    ({"val_fraction": 0.5}, r"--val-fraction must be in \[0, 0.5\)"),
                    ({"loss": "ce"}, "--loss ce trains on given completions"),
                    ({"data": "/no/such.jsonl"}, "data file /no/such.jsonl does not exist"),
                    ({"lora_modules": ("attn", "lm_head")}, "unknown LoRA module 'lm_head'"),
                    ({"lora_modules": ()}, "--lora-modules names no module"),
                    ({"lora_modules": ("attn",), "full": True}, "--full trains every weight")]:
        with pytest.raises(DraftwiseError, match=msg.replace("(", r"\(")):
            DistillOptions(**{"target": "t", "draft": "d", "out": "x", **kw})


# -- the tiny run ------------------------------------------------------------------------------


def test_end_to_end_loss_falls_and_agreement_rises(distilled, home):
    run = distilled.run
    train = json.loads((run / "train" / "done.json").read_text())
    assert train["loss_last"] < 0.3 * train["loss_first"]
    # 3 of the 32 training prompts validated after every epoch; the kept epoch is the best one
    val = train["val_losses"]  # after every epoch
    assert train["val_sequences"] == 3 * 4 and min(val) < train["val_start"]
    epoch = -(-train["sequences"] // 4)
    best = min(epoch * (val.index(min(val)) + 1), train["steps"])  # the last check: at the end
    assert train["best_step"] == best <= train["steps_run"]
    assert train["early_stop"] == (len(val) > 1 and val[-1] > val[-2])
    rep = json.loads((run / "eval" / "report.json").read_text())
    tallies, groups = rep["tallies"], rep["groups"]
    trained = [c for c, g in groups.items() if g == "trained"]
    assert trained and "code" in groups and groups["code"] == "other"
    draft_label = next(k for k in tallies if k.endswith("draft.gguf"))
    for c in trained:  # held-out prompts, unquantized export vs the stock draft
        before, after = tallies[draft_label][c], tallies[NAME][c]
        assert before["positions"] == after["positions"] > 100
        assert after["agreement"] > before["agreement"] + 0.05
        assert after["acceptance"] > before["acceptance"]
    assert distilled.verdict.startswith("verdict: ") and "held-out greedy agreement" in \
        distilled.verdict
    assert distilled.verdict.startswith("verdict: better")  # the q6_k pair, sign test p < .05
    assert rep["gained"] > 3 * rep["lost"]
    assert (run / "eval" / "report.md").read_text().count("|") > 10
    assert (run / "eval" / "agreement.png").read_bytes()[:4] == b"\x89PNG"
    assert set(distilled.timings) == {"gen", "score", "train", "export", "eval"}
    # the training prompts were recorded and none was evaluated
    gen = json.loads((run / "gen" / "done.json").read_text())
    trained_ids = {(p["category"], p["id"]) for p in gen["train_prompts"]}
    assert len(trained_ids) == 32
    evaluated = {(r["category"], r["id"]) for r in
                 (json.loads(f.read_text()) for f in (run / "eval" / "conts").glob("*.json"))}
    assert len(evaluated) == 8 + 2 and not trained_ids & evaluated
    assert not list(home.rglob("*.partial"))


def test_registry_models_list_and_resolve(distilled, tiny, in_home):
    from draftwise.doctor.report import check
    from draftwise.models import registry
    from draftwise.models.catalog import resolve

    e = registry.get(NAME)
    assert e.parent == str(tiny["draft"]) and e.target == str(tiny["target"])
    assert "fkl (greedy)" in e.recipe and "lora r4" in e.recipe
    assert resolve(NAME).ref == str(distilled.model)
    assert resolve(f"{NAME}-q6_k").ref == distilled.variants["q6_k"]
    assert check(str(tiny["target"]), NAME, generate=False).verdict == "identical"
    r = subprocess.run([sys.executable, "-m", "draftwise.cli", "models", "list"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "local models" in r.stdout and NAME in r.stdout and f"{NAME}-q6_k" in r.stdout
    assert str(tiny["draft"]) in r.stdout and "re-encoded" in r.stdout, r.stdout


def test_export_round_trip(distilled, tiny, in_home):
    import torch

    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.backends.transformers import TransformersBackend
    from draftwise.distill.gguffile import read_gguf
    from draftwise.distill.hfmodel import load_model
    from draftwise.distill.options import DistillOptions
    from draftwise.distill.rundir import RunDir, read_json
    from draftwise.distill.train import trained_weights

    src, out = read_gguf(tiny["draft"]), read_gguf(distilled.model)
    assert out.kv == src.kv  # metadata, tokenizer and chat template: byte for byte
    trained = {n for n in out.tensors if n.endswith(("attn_q.weight", "attn_k.weight",
                                                      "attn_v.weight", "attn_output.weight",
                                                      "ffn_gate.weight", "ffn_up.weight",
                                                      "ffn_down.weight"))}
    assert len(trained) == 14
    for n in src.tensors:
        same = np.array_equal(out.raw(n), src.raw(n))
        assert same == (n not in trained), n
    # llama.cpp runs the file as the trained HF model does, within Q8_0's rounding
    opts = DistillOptions.from_dict(read_json(distilled.run / "options.json"))
    sd, changed = trained_weights(RunDir(distilled.run), src, opts)
    model, _ = load_model(src)
    model.load_state_dict(sd)
    file_model, _ = load_model(out)  # the exported weights as written
    ids = LlamaCppBackend(str(tiny["draft"]), n_ctx=256, threads=1).tokenize(
        "def quick the fox return tokens draft")
    be = LlamaCppBackend(str(distilled.model), n_ctx=256, threads=1)
    ll = np.array(be.forward(ids, len(ids)))
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
        hf_file = file_model(torch.tensor([ids])).logits[0].numpy()
    # Q8_0 of the 14 trained tensors (large weights: lr 2e-2) moves the logits by a few percent
    quant_err = np.abs(hf - hf_file).max()
    assert quant_err < 0.08 * np.abs(hf).max()
    assert np.abs(ll - hf_file).max() < 0.05 * np.abs(hf).max()  # the same weights, two engines
    assert np.abs(ll - hf).max() < 0.1 * np.abs(hf).max()
    assert (ll.argmax(1) == hf.argmax(1)).mean() >= 0.8
    for hf_name, gg in (("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"),
                        ("model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight")):
        w, wq = sd[hf_name].numpy(), out.array(gg)
        blocks = np.abs(w).reshape(-1, 32).max(1, keepdims=True)
        assert (np.abs(w - wq).reshape(-1, 32) <= blocks / 127 * 0.6 + 1e-6).all()
    # the transformers backend loads it too (dequantized through its own GGUF reader)
    tb = TransformersBackend(str(distilled.model))
    assert tb.tokenize("def quick the fox return tokens draft") == ids
    assert (tb.forward(ids, len(ids)).argmax(1) == ll.argmax(1)).mean() >= 0.8


def test_distilled_draft_is_lossless(distilled, tiny, in_home):
    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.compare import ar_reference, divergence
    from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
    from draftwise.drafters.model import ModelDrafter
    from draftwise.engine import Engine
    from draftwise.sampling import probs

    target = LlamaCppBackend(str(tiny["target"]), n_ctx=512, threads=1)
    draft = LlamaCppBackend(str(distilled.model), n_ctx=512, threads=1)
    engine = Engine(target, ModelDrafter(draft), SpecConfig(k=3))
    cfg = GenerateConfig(max_tokens=40)
    accepted = 0
    for prompt in ("the quick fox", "def pivot return", "for tokens if draft"):
        sd = engine.generate(prompt, cfg)
        div = divergence(sd.tokens, *ar_reference(target, prompt, cfg))
        assert div.identical or div.ar_margin < NEAR_TIE, div.describe()
        accepted += sd.stats.n_accepted
    assert accepted > 0
    # sampling at T=1: the first two tokens follow the target's distribution. Cells: each likely
    # pair, the rest of each likely first token's row, and all other first tokens (full
    # support, so a verify pass's slightly different logits move probabilities, not supports)
    s, n = SamplingConfig(temperature=1.0), 3000
    eos = min(target.vocab.eos_ids)
    ids = target.tokenize("the quick fox")
    target.rollback(0)
    p1 = probs(np.array(target.forward(ids, 1)), s)[0]
    firsts = [int(a) for a in np.flatnonzero(p1 * n >= 5) if a != eos]
    expected: dict = {"other": 1.0 - p1[firsts].sum()}
    for a in firsts:
        target.rollback(0)
        p2 = probs(np.array(target.forward([*ids, a], 1)), s)[0]
        seconds = np.flatnonzero(p1[a] * p2 * n >= 5)
        expected.update({(a, int(b)): p1[a] * p2[b] for b in seconds})
        expected[(a, "rest")] = p1[a] * (1.0 - p2[seconds].sum())
    target.rollback(0)
    counts = dict.fromkeys(expected, 0)
    drafted = 0
    for seed in range(n):
        # max_tokens 3: the first token is the target's own, the second may be drafted
        g = engine.generate(ids, GenerateConfig(max_tokens=3, sampling=SamplingConfig(
            1.0, 0, 1.0, seed)))
        toks = [*g.tokens, eos, eos][:2]  # an end-of-generation token ends the output early
        a, b = toks
        cell = "other" if a not in firsts else (a, b) if (a, b) in counts else (a, "rest")
        counts[cell] += 1
        drafted += g.stats.n_drafted
    assert drafted > 0 and len(counts) > 5
    cells = list(expected)
    assert chisquare([counts[c] for c in cells], [expected[c] * n for c in cells]).pvalue > 0.001


def test_layers_cut_then_distill(tiny, in_home):
    """--layers 2 on a 4-block draft: the cut is trained and exported with 2 blocks; the
    evaluation shows the untrained cut beside the stock draft and the result."""
    from draftwise.distill.gguffile import read_gguf
    from draftwise.distill.pipeline import run_distill

    draft4 = write_tiny_gguf(in_home / "draft4.gguf", tiny["tok_dir"], tiny["tok"],
                             random_qwen2(len(tiny["tok"]), seed=3, layers=4))
    res = run_distill(given(tiny, draft=str(draft4), out="tiny-cut", layers=2, quant=None,
                            steps=60))
    base = json.loads((res.run / "base" / "done.json").read_text())
    assert base["of"] == 4 and len(base["kept"]) == 2 and base["kept"][0] == 0
    assert base["choice"] == "similar"
    out = read_gguf(res.model)
    assert out.n_blocks == 2 and not any(n.startswith("blk.2.") for n in out.tensors)
    src = read_gguf(draft4)
    assert np.array_equal(out.raw("blk.1.attn_norm.weight"),
                          src.raw(f"blk.{base['kept'][1]}.attn_norm.weight"))
    rep = json.loads((res.run / "eval" / "report.json").read_text())
    assert list(rep["tallies"]) == [str(draft4), "tiny-cut (cut, untrained)", "tiny-cut"]
    train = json.loads((res.run / "train" / "done.json").read_text())
    assert train["loss_last"] < train["loss_first"]
    cut, after = rep["tallies"]["tiny-cut (cut, untrained)"], rep["tallies"]["tiny-cut"]
    assert sum(t["agree"] for t in after.values()) > sum(t["agree"] for t in cut.values())


# -- resume ------------------------------------------------------------------------------------


def test_ce_on_given_completions_teaches_the_draft_a_style(tiny, in_home, tmp_path):
    """--data with --loss ce (the default with --data): no generation, no target scoring; the
    draft learns a fixed continuation and writes it after held-out prompts."""
    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.distill.data import Job, continue_many
    from draftwise.distill.options import DistillOptions
    from draftwise.distill.pipeline import run_distill

    style = " return pivot"
    r = random.Random(1)
    rows = [{"prompt": " ".join(r.choice(WORDS) for _ in range(r.randint(3, 8))),
             "completion": style} for _ in range(40)]
    data = tmp_path / "styled.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in rows))
    assert DistillOptions(target="t", draft="d", out="x", data=str(data)).loss == "ce"
    res = run_distill(given(tiny, prompts=None, data=str(data), out="tiny-ce", n_prompts=32,
                            steps=60, quant=None, n_eval_other=0, val_fraction=0.0))
    run = res.run
    gen = json.loads((run / "gen" / "done.json").read_text())
    score = json.loads((run / "score" / "done.json").read_text())
    train = json.loads((run / "train" / "done.json").read_text())
    assert gen["n_sequences"] == 32 and score["top_k"] == 1 and score["rest_mass_mean"] == 0
    assert train["loss_last"] < 0.2 * train["loss_first"]
    stock = LlamaCppBackend(str(tiny["draft"]), n_ctx=256, threads=1)
    styled = LlamaCppBackend(str(res.model), n_ctx=256, threads=1)
    try:
        wrote = {name: [be.detokenize(out) for out in continue_many(
            be, [Job(be.tokenize(row["prompt"]), 0.0, 0) for row in rows[32:]], 8)]
            for name, be in (("stock", stock), ("styled", styled))}
    finally:
        stock.close()
        styled.close()
    assert sum(t.startswith(style) for t in wrote["styled"]) >= 6, wrote  # of 8 held out
    assert not any(style in t for t in wrote["stock"]), wrote


def test_resume_after_interrupted_stages(tiny, in_home, monkeypatch):
    """Ctrl-C in training keeps a checkpoint; a resumed run redoes only what is missing and
    trains exactly as an uninterrupted run does. Half the prompts also get the target's
    continuation, scored as gen decodes it."""
    import draftwise.distill.train as train_mod
    from draftwise.distill.data import GEN_CHUNK
    from draftwise.distill.pipeline import run_distill
    from draftwise.distill.rundir import RunDir
    from draftwise.distill.score import read_scores
    from draftwise.distill.topk import load_scores

    opts = given(tiny, out="tiny-resume", steps=12, quant=None, dtype="auto", target_mix=0.5)
    real_step_loss, calls = train_mod.step_loss, []

    def step_loss(*a, **kw):  # the 5th training step's first sequence: Ctrl-C
        if kw.get("prompt_grad", True):  # not a validation sequence (val_loss passes False)
            calls.append(1)
            if len(calls) == 4 * 4 + 1:
                os.kill(os.getpid(), signal.SIGINT)
        return real_step_loss(*a, **kw)

    monkeypatch.setattr(train_mod, "step_loss", step_loss)
    with pytest.raises(KeyboardInterrupt):
        run_distill(opts)
    monkeypatch.setattr(train_mod, "step_loss", real_step_loss)
    run = in_home / "distill" / "tiny-resume"
    import torch

    ckpt = torch.load(run / "train" / "ckpt.pt")
    assert ckpt["step"] == 5 and len(ckpt["losses"]) == 5  # the interrupted step was finished
    assert not (run / "train" / "done.json").exists() and not (run / "export").exists()
    # lose a chunk of generated items and one score shard as a kill would: only those are
    # redone (a whole chunk: its batches, and so its tokens, are the same again)
    items = sorted((run / "gen" / "items").glob("*.json"))
    lost, kept = items[:GEN_CHUNK], {f: f.stat().st_mtime_ns for f in items[GEN_CHUNK:]}
    assert kept
    lost_rows = [f.with_suffix(".npz") for f in lost if f.with_suffix(".npz").is_file()]
    assert lost_rows  # the target continued some of those prompts
    for f in (*lost, *lost_rows, run / "gen" / "done.json", run / "gen" / "data.jsonl",
              run / "gen" / "scores.npz", run / "score" / "shard-00001.npz",
              run / "score" / "done.json"):
        f.unlink()
    shard0 = (run / "score" / "shard-00000.npz").stat().st_mtime_ns
    res = run_distill({"out": "tiny-resume"}, resume=True)
    assert all(f.is_file() for f in lost)
    assert all(f.stat().st_mtime_ns == t for f, t in kept.items())
    assert (run / "score" / "shard-00000.npz").stat().st_mtime_ns == shard0
    assert (run / "score" / "shard-00001.npz").is_file()
    # the target's continuations were scored in gen, and the shards hold exactly those rows
    rows = load_scores(run / "gen" / "scores.npz")
    examples = [json.loads(x) for x in (run / "gen" / "data.jsonl").read_text().splitlines()]
    assert set(rows) == {e["seq"] for e in examples if e["source"] == "target"} != set()
    shards = read_scores(RunDir(run), len(examples))
    for seq, s in rows.items():
        assert len(s.rest) == len(examples[seq]["cont"])
        assert all(np.array_equal(getattr(s, f), getattr(shards[seq], f))
                   for f in ("idx", "logp", "rest"))
    assert json.loads((run / "score" / "done.json").read_text())["from_gen"] == len(rows)
    resumed = json.loads((run / "train" / "done.json").read_text())
    assert resumed["losses"][:5] == pytest.approx(ckpt["losses"], rel=1e-5)
    assert not (run / "train" / "ckpt.pt").exists() and res.model.is_file()
    straight = run_distill(given(tiny, out="tiny-straight", steps=12, quant=None, dtype="auto",
                                 target_mix=0.5))
    again = json.loads((straight.run / "train" / "done.json").read_text())
    np.testing.assert_allclose(resumed["losses"], again["losses"], rtol=1e-3)
    # a finished run resumes to the same result without redoing anything
    assert run_distill({"out": "tiny-resume"}, resume=True).verdict == res.verdict


def test_early_stopping_keeps_the_best_epoch(tiny, in_home, monkeypatch):
    """Validation loss 4 before training, 3, 2, 2.5 after epochs 1-3 of 4: training stops after
    the third (it rose) and the saved adapter is the one of the second (the lowest)."""
    import draftwise.distill.train as train_mod
    from draftwise.distill.pipeline import run_distill

    seen = []

    def val_loss(model, *a, **kw):
        seen.append(train_mod.trainable_state(model))
        return [4.0, 3.0, 2.0, 2.5, 1.0][len(seen) - 1]

    monkeypatch.setattr(train_mod, "val_loss", val_loss)
    res = run_distill(given(tiny, out="tiny-early", n_prompts=20, samples=1, steps=None,
                            epochs=4, quant=None, n_eval_other=0))
    train = json.loads((res.run / "train" / "done.json").read_text())
    assert (train["val_sequences"], train["sequences"]) == (2, 18)  # 5 steps per epoch
    assert train["val_start"] == 4.0 and train["val_losses"] == [3.0, 2.0, 2.5]
    assert len(seen) == 4
    assert (train["steps"], train["steps_run"], train["best_step"]) == (20, 15, 10)
    assert train["early_stop"] and len(train["losses"]) == 15
    from safetensors.torch import load_file

    saved = load_file(str(res.run / "train" / "adapter.safetensors"))
    best = {k.replace(".default", ""): v for k, v in seen[2].items()}
    assert set(saved) == set(best)
    for k, v in saved.items():
        assert torch_equal(v, best[k]) and not torch_equal(v, seen[3][k.replace(
            ".weight", ".default.weight")])


def test_no_epoch_helps_keeps_the_untrained_draft(tiny, in_home, monkeypatch):
    import draftwise.distill.train as train_mod
    from draftwise.distill.pipeline import run_distill

    """Validation loss 1 before training, 2 and 3 after the first two epochs: training stops
    (it rose) and the result is the draft as it was (LoRA's B matrices still zero)."""
    values = iter([1.0, 2.0, 3.0])
    monkeypatch.setattr(train_mod, "val_loss", lambda *a, **kw: next(values))
    res = run_distill(given(tiny, out="tiny-worse", n_prompts=20, samples=1, steps=None,
                            epochs=4, quant=None, n_eval_other=0))
    train = json.loads((res.run / "train" / "done.json").read_text())
    assert (train["steps_run"], train["best_step"], train["early_stop"]) == (10, 0, True)
    from safetensors.torch import load_file

    lora_b = [v for k, v in load_file(str(res.run / "train" / "adapter.safetensors")).items()
              if "lora_B" in k]
    assert lora_b and all(not v.any() for v in lora_b)  # peft starts B at zero: no change


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a.float(), b.float()))


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input_one_clear_line_nothing_written(distilled, tiny, in_home):
    from draftwise.distill.pipeline import run_distill

    cases = [
        (given(tiny, draft=str(tiny["other"]), out="x1"), r"cannot distill .*check.* says bridged"),
        (given(tiny, out=NAME), f"{NAME} exists"),
        (given(tiny, out="qwen2.5-coder-0.5b"), "exists \\(a catalog model\\)"),
    ]
    for opts, msg in cases:
        with pytest.raises(DraftwiseError, match=msg):
            run_distill(opts)
    assert not (in_home / "distill" / "x1").exists()
    with pytest.raises(DraftwiseError, match="no distill run named nothing-here"):
        run_distill({"out": "nothing-here"}, resume=True)
    with pytest.raises(DraftwiseError, match=r"started with other options \(loss\)"):
        run_distill({"out": NAME, "loss": "tvd"}, resume=True)
    r = subprocess.run([sys.executable, "-m", "draftwise.cli", "distill", "--target",
                        str(tiny["target"]), "--draft", str(tiny["draft"]), "-c", "poetry"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        r.stderr.strip().splitlines()[0]] and "unknown category 'poetry'" in r.stderr


def test_no_disk_space_for_the_export(tiny, in_home, monkeypatch):
    import shutil

    import draftwise.distill.gguffile as gf
    from draftwise.distill.pipeline import run_distill
    from draftwise.models import registry

    opts = given(tiny, out="tiny-full-disk", steps=3, quant=None)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(gf.shutil, "disk_usage",
                        lambda p: real_usage(p)._replace(free=10_000_000))
    with pytest.raises(DraftwiseError, match="not enough disk space for exporting tiny-full-disk"):
        run_distill(opts)
    models = in_home / "models"
    assert not (models / "tiny-full-disk.gguf").exists() and registry.get("tiny-full-disk") is None
    monkeypatch.setattr(gf.shutil, "disk_usage", real_usage)

    def full(fd):  # the disk fills up while the file is written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gf.os, "fsync", full)
    with pytest.raises(DraftwiseError, match="the disk filled up while writing"):
        run_distill({"out": "tiny-full-disk"}, resume=True)
    assert not (models / "tiny-full-disk.gguf").exists() and registry.get("tiny-full-disk") is None
    assert not [p for p in models.iterdir() if "partial" in p.name]
    monkeypatch.undo()
    monkeypatch.setenv("DRAFTWISE_HOME", str(in_home))
    res = run_distill({"out": "tiny-full-disk"}, resume=True)  # space again: it completes
    assert res.model.is_file() and registry.get("tiny-full-disk") is not None


def test_adapter_trained_at_its_quantization_applied_by_llama_cpp(tiny, in_home):
    """--adapter: training runs on the draft's own quantized weights (here the draft is already
    the --quant file, Q8_0: at q4_0 the tiny random draft agrees too little to learn from) and
    the export is a LoRA adapter GGUF: llama.cpp applying it to that file computes what the
    trained HF model computes, the model loads by name everywhere a GGUF does, and what cannot
    apply it says so."""
    import torch

    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.distill.gguffile import read_gguf
    from draftwise.distill.hfmodel import load_model
    from draftwise.distill.options import ADAPTER_MODULES
    from draftwise.distill.pipeline import run_distill
    from draftwise.distill.train import make_trainable
    from draftwise.export.common import gguf_file
    from draftwise.loader import BackendOptions, cost_key, load_backend
    from draftwise.models import registry
    from draftwise.models.catalog import resolve
    from draftwise.models.quantize import file_quant, quantize

    name = "tiny-adapter"
    res = run_distill(given(tiny, out=name, adapter=True, quant="q8_0"))
    base = tiny["draft"]  # already Q8_0: trained as it is, registered by its path
    lora = in_home / "models" / f"{name}.lora.gguf"
    assert file_quant(base) == "q8_0" and lora.is_file() and not res.variants
    assert not (in_home / "models" / "draft-q8_0.gguf").exists()
    e = registry.get(name)
    assert e.file == str(base) and e.adapter == lora.name and "adapter on the q8_0" in e.recipe
    ref = resolve(name)
    assert (ref.ref, ref.lora) == (str(base), str(lora))
    g = read_gguf(lora)
    assert g.get("general.type") == "adapter" and g.get("adapter.type") == "lora"
    # --adapter's default modules: attention and down_proj, 5 of each block's 7 linear layers
    assert len(g.tensors) == 2 * 2 * 5 and not g.get("tokenizer.ggml.tokens")
    assert not any("ffn_gate" in t or "ffn_up" in t for t in g.tensors)
    # the trained HF model: the q4_0 weights, dequantized, plus the LoRA as trained
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    model, _ = load_model(read_gguf(base))
    model = make_trainable(model, 4, False, modules=ADAPTER_MODULES)
    set_peft_model_state_dict(model, load_file(str(res.run / "train" / "adapter.safetensors")))
    ids = LlamaCppBackend(str(base), n_ctx=256, threads=1).tokenize(
        "def quick the fox return tokens draft")
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
        with model.disable_adapter():
            hf0 = model(torch.tensor([ids])).logits[0].numpy()
    plain_be = LlamaCppBackend(str(base), n_ctx=256, threads=1)
    plain = np.array(plain_be.forward(ids, len(ids)))
    be = load_backend(name, BackendOptions(threads=1, n_ctx=256))
    ll = np.array(be.forward(ids, len(ids)))
    # llama.cpp rounds activations to 8 bits for quantized weights: compare what the adapter
    # changes in each engine; it is large, and the same
    moved = np.abs(hf - hf0).max()
    assert moved > 0.2 * np.abs(hf0).max()
    assert np.abs((ll - plain) - (hf - hf0)).max() < 0.1 * moved
    assert np.abs(ll - hf).max() < 0.05 * np.abs(hf).max()
    # held-out agreement rises at the draft's own quantization: with the adapter, without
    rep = json.loads((res.run / "eval" / "report.json").read_text())
    assert rep["before"] == str(tiny["draft"]) and rep["after"] == name
    for c, grp in rep["groups"].items():
        if grp == "trained":
            b, a = rep["tallies"][rep["before"]][c], rep["tallies"][name][c]
            assert a["agreement"] > b["agreement"] + 0.05
    from draftwise.bench.drafts import quant_of

    assert quant_of(name) == "q8_0+lora"  # bench's quant column
    # persisted costs are kept apart from the plain file's
    assert cost_key(str(tiny["target"]), name, BackendOptions()) != \
        cost_key(str(tiny["target"]), str(base), BackendOptions())
    for call, msg in [
        (lambda: load_backend(name, BackendOptions(backend="transformers")),
         "is a LoRA adapter that llama.cpp applies"),
        (lambda: quantize(name, "q8_0"), "has no weights of its own"),
        (lambda: gguf_file(name, "llama-server"), "cannot apply an adapter to a draft"),
        (lambda: LlamaCppBackend(str(base), n_ctx=256, threads=1, lora=str(lora) + ".gone"),
         "could not apply the LoRA adapter"),
        (lambda: LlamaCppBackend(str(base), n_ctx=256, threads=1, lora=str(base)),
         "could not apply the LoRA adapter"),  # a model file, not an adapter
    ]:
        with pytest.raises(DraftwiseError, match=msg):
            call()
    r = subprocess.run([sys.executable, "-m", "draftwise.cli", "models", "path", name],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == [str(base), str(lora)], r.stderr
    with pytest.raises(DraftwiseError, match="--adapter .* cannot go with --full"):
        run_distill(given(tiny, out="tiny-adapter-full", adapter=True, full=True))


# -- llama architecture and the real draft ----------------------------------------------------


def test_llama_gguf_loads_and_exports_byte_for_byte(tiny, tmp_path):
    """Llama's q/k rows are permuted in GGUF: loading undoes it (HF logits match llama.cpp's)
    and exporting unchanged weights redoes it (the file comes back identical)."""
    import torch

    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.distill.export import trained_tensors
    from draftwise.distill.gguffile import read_gguf, write_gguf
    from draftwise.distill.hfmodel import load_model

    sd = {k: v for k, v in tiny["sd"].items() if "bias" not in k}  # llama: no q/k/v biases
    path = write_tiny_gguf(tmp_path / "llama.gguf", tiny["tok_dir"], tiny["tok"], sd,
                           arch="llama", qtype="F32")
    g = read_gguf(path)
    model, lay = load_model(g)
    be = LlamaCppBackend(str(path), n_ctx=256, threads=1)
    ids = be.tokenize("the quick fox return tokens")
    ll = np.array(be.forward(ids, len(ids)))
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(hf, ll, atol=0.01 * np.abs(hf).max())  # a wrong permutation: ~1x
    state = model.state_dict()
    tensors = trained_tensors(g, state, set(lay.names))  # every tensor re-encoded from HF
    assert all(t.data is not None for t in tensors)
    out = write_gguf(g, tmp_path / "again.gguf", tensors)
    assert out.read_bytes() == path.read_bytes()


def test_llama_adapter_keeps_q_k_rows_permuted(tiny, tmp_path):
    """A LoRA on a llama draft: B's rows are q/k output rows, permuted in GGUF like the weights;
    llama.cpp applying the exported adapter to the F32 file matches the peft model."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.distill.export import lora_tensors, write_adapter
    from draftwise.distill.gguffile import read_gguf
    from draftwise.distill.hfmodel import load_model
    from draftwise.distill.rundir import RunDir
    from draftwise.distill.train import make_trainable
    from draftwise.files import write_json

    sd = {k: v for k, v in tiny["sd"].items() if "bias" not in k}
    path = write_tiny_gguf(tmp_path / "llama.gguf", tiny["tok_dir"], tiny["tok"], sd,
                           arch="llama", qtype="F32")
    g = read_gguf(path)
    model = make_trainable(load_model(g)[0], 4, False)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:  # peft starts B at zero: give every adapter an effect
                p.normal_(0, 0.05)
    (tmp_path / "train").mkdir()
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()},
              str(tmp_path / "train" / "adapter.safetensors"))
    write_json(tmp_path / "train" / "adapter.json", {"r": 4, "lora_alpha": 8})
    tensors, alpha = lora_tensors(RunDir(tmp_path), g)
    assert alpha == 4 and len(tensors) == 2 * 14  # B carries alpha / r = 2: llama.cpp scales by 1
    lora = write_adapter(tmp_path / "llama.lora.gguf", "llama", alpha, tensors)
    be = LlamaCppBackend(str(path), n_ctx=256, threads=1, lora=str(lora))
    assert be.weights == f"{path} + {lora}"  # reports name the adapter, not the base alone
    ids = be.tokenize("the quick fox return tokens")
    ll = np.array(be.forward(ids, len(ids)))
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
        with model.disable_adapter():
            hf0 = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(hf - hf0).max() > 0.2 * np.abs(hf0).max()
    np.testing.assert_allclose(ll, hf, atol=0.01 * np.abs(hf).max())  # B unpermuted: misses by 6.8


@pytest.mark.real
def test_real_draft_cut_to_two_blocks(qwen_paths, tmp_path):
    """--layers on the real 0.5B: 2 of 24 blocks, tensors copied byte for byte and renumbered,
    block_count rewritten; llama.cpp and the HF model built from the cut agree."""
    import torch

    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.distill.gguffile import choose_layers, cut_layers, read_gguf
    from draftwise.distill.hfmodel import load_model

    src = read_gguf(qwen_paths[1])
    keep = choose_layers(src.n_blocks, 2)
    assert keep == [0, 23]
    cut = read_gguf(cut_layers(src, keep, tmp_path / "cut.gguf"))
    assert cut.arch_key("block_count") == 2 and cut.n_blocks == 2
    assert {k for k in cut.kv if k != "qwen2.block_count"} == \
        {k for k in src.kv if k != "qwen2.block_count"}
    assert all(cut.kv[k] == v for k, v in src.kv.items() if k != "qwen2.block_count")
    assert np.array_equal(cut.raw("blk.1.ffn_down.weight"), src.raw("blk.23.ffn_down.weight"))
    assert np.array_equal(cut.raw("output.weight"), src.raw("output.weight"))
    assert not any(n.startswith("blk.2.") for n in cut.tensors)
    be = LlamaCppBackend(str(cut.path), n_ctx=256, threads=2)
    ids = be.tokenize("def quicksort(a):\n    if len(a) <= 1:\n        return a\n")
    ll = np.array(be.forward(ids, len(ids)))
    model, _ = load_model(cut)
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
    assert (ll.argmax(1) == hf.argmax(1)).mean() >= 0.8
