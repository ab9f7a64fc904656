"""advise: its arithmetic against hand-computed cases, and a run on tiny models."""

import json

import numpy as np
import pytest

from draftwise.bench.advise import (
    Costs,
    Replay,
    greedy_agreement,
    iid_speedup,
    overlap,
    replay,
    replay_source,
    token_probs,
)
from draftwise.bench.advise_cmd import predict, run_advise
from draftwise.bench.options import AdviseOptions, PromptOptions
from draftwise.config import SamplingConfig
from draftwise.drafters.ngram import NgramDrafter
from draftwise.errors import DraftwiseError
from draftwise.loader import BackendOptions
from draftwise.sampling import probs


def test_iid_speedup_hand_computed():
    # alpha .8, K 3: E = (1 - .8^4) / .2 = 2.952 tokens per round; a round costs
    # 3 x 2 ms drafting + 14 ms verifying 4 tokens = 20 ms; AR costs 10 ms per token
    assert iid_speedup(0.8, 3, 0.010, 0.002, 0.014) == pytest.approx(2.952 * 10 / 20)
    assert iid_speedup(0.5, 1, 0.010, 0.001, 0.011, 0.0005) == pytest.approx(1.5 * 10 / 12.5)
    assert iid_speedup(0.0, 0, 0.010, 0.0, 0.010) == pytest.approx(1.0)


def test_greedy_replay_hand_computed():
    acc = [1, 1, 0, 1, 1, 1, 1, 0]
    rp = replay(len(acc), lambda j, k: (acc[j:j + k], k), 2)
    # j=0: drafts 2, both accepted -> 3 tokens; j=3: same; j=6: 1 draft (budget), accepted -> 2
    assert (rp.tokens, rp.rounds, rp.drafted, rp.accepted, rp.steps) == (8, 3, 5, 5, 5)
    assert rp.verified == [0, 1, 2]
    assert rp.tau == pytest.approx(8 / 3)
    # 5 steps x 1 ms + one 2-token verify (11 ms) + two 3-token verifies (12 ms)
    assert rp.seconds(0.001, [0.010, 0.011, 0.012], [0.0, 0.0, 0.0]) == pytest.approx(0.040)


def test_replay_rejection_ends_the_round():
    acc = [0, 0, 0, 0]
    rp = replay(len(acc), lambda j, k: (acc[j:j + k], k), 3)
    assert (rp.tokens, rp.rounds, rp.accepted) == (4, 4, 0)
    assert rp.verified == [1, 1, 1, 1]  # drafts shrink with the budget: 3, 2, 1, then none


def test_replay_at_constant_acceptance_matches_leviathan():
    alpha, k = 0.6, 3
    rng = np.random.default_rng(1)
    rp = replay(200_000, lambda j, kk: ([alpha] * kk, kk), k, rng)
    assert rp.tau == pytest.approx((1 - alpha ** (k + 1)) / (1 - alpha), rel=0.01)


def test_predict_hand_computed():
    rp = Replay(tokens=8, rounds=3, drafted=5, accepted=5, steps=5, verified=[0, 1, 2])
    costs = Costs(t_verify=[0.010, 0.011, 0.012], t_check=[0.0, 0.0, 0.0], t_step={"d": 0.001})
    adv = predict("d", 0.0, {2: rp}, 0.75, costs)
    p = adv.per_k[0]
    assert p.k == 2 and p.tau == pytest.approx(8 / 3)
    assert p.speedup == pytest.approx(8 * 0.010 / 0.040)
    assert p.tau_iid == pytest.approx(1 + 0.75 + 0.5625)
    assert p.speedup_iid == pytest.approx(2.3125 * 0.010 / (2 * 0.001 + 0.012))
    assert adv.best_k == 2 and adv.alpha == 0.75 and adv.t_step_ms == pytest.approx(1.0)


def test_agreement_and_overlap():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    assert greedy_agreement(logits, [0, 1], 3).tolist() == [1.0, 0.0]
    p = np.log(np.array([[0.5, 0.5, 1e-12]]))
    q = np.log(np.array([[0.25, 0.25, 0.5]]))
    assert overlap(p, q, SamplingConfig(temperature=1.0)) == pytest.approx([0.5])
    s = SamplingConfig(temperature=0.7)
    assert token_probs(q, s)(0, 2) == pytest.approx(probs(q, s)[0, 2])


def test_ngram_replay_follows_the_lookup():
    prompt = [1, 2, 3, 4, 5]
    cont = [1, 2, 3, 4, 5, 9]  # the target repeats the prompt, then leaves it
    propose, fb = replay_source(NgramDrafter(), prompt, cont, None, None)
    rp = replay(len(cont), propose, 4, feedback=fb)
    # j=0: suffix "5" never seen before -> no draft; j=1: "5 1" -> 2 3 4 5 proposed, all accepted;
    # then one target token (the 9) ends the text
    assert (rp.rounds, rp.drafted, rp.accepted, rp.steps) == (2, 4, 4, 0)
    assert rp.tokens == 6


def test_bad_input(tiny_models, tmp_path):
    tgt, draft = map(str, tiny_models)
    with pytest.raises(DraftwiseError, match="k_max"):
        AdviseOptions(tgt, (draft,), k_max=0)
    with pytest.raises(DraftwiseError, match="at least one draft"):
        AdviseOptions(tgt, ())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DraftwiseError, match="holds no prompts"):
        run_advise(AdviseOptions(tgt, (draft,)), PromptOptions(prompt_file=str(empty)))


def _check_against_recorded_costs(a: dict, costs: dict) -> None:
    """One draft's predictions against the costs advise.json records: Leviathan's formula exactly
    (where alpha is the draft model's, i.e. not for ngram), and the replayed speedup within what
    its tau allows: each round verifies 1..K+1 tokens and takes at most K draft steps."""
    t_step = costs["t_step"][a["draft"]]
    c = np.add(costs["t_verify"], costs["t_check"])  # [n-1]: a verify of n tokens, checked
    assert a["t_step_ms"] == pytest.approx(1e3 * t_step)
    for p in a["per_k"]:
        k, tau = p["k"], p["tau"]
        assert 1 <= tau <= k + 1
        assert (tau * c[0] / (c[:k + 1].max() + k * t_step) * (1 - 1e-9) <= p["speedup"]
                <= tau * c[0] / c[:k + 1].min() * (1 + 1e-9))
        if a["draft"] != "ngram":
            e = sum(a["alpha"] ** i for i in range(k + 1))  # (1 - alpha^(K+1)) / (1 - alpha)
            assert p["tau_iid"] == pytest.approx(e)
            assert p["speedup_iid"] == pytest.approx(e * c[0] / (k * t_step + c[k]))


def test_run_advise_on_tiny_models(tiny_models, tmp_path):
    tgt, draft = map(str, tiny_models)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "def quicksort(a):\\n"}\n{"turns": ["The quick brown fox"]}\n')
    run_advise(AdviseOptions(tgt, (draft, "ngram", f"ngram+{draft}"), k_max=3, max_tokens=16,
                             temperatures=(0.0, 0.8), out_dir=str(tmp_path), reps=2),
               PromptOptions(prompt_file=str(prompts)), BackendOptions(n_ctx=256))
    res = json.loads((tmp_path / "advise.json").read_text())
    assert len(res["advice"]) == 6 and len(res["prompts"]) == 2
    assert len(res["costs"]["0"]["t_verify"]) == 4
    for a in res["advice"]:
        assert [p["k"] for p in a["per_k"]] == [1, 2, 3]
        assert 0 <= a["alpha"] <= 1
        _check_against_recorded_costs(a, res["costs"][f"{a['temperature']:g}"])
    assert res["recommendations"] and all(r.startswith("T=") for r in res["recommendations"])


def test_replayable_drafters():
    from draftwise.drafters.base import Draft, Drafter
    from draftwise.drafters.hybrid import HybridDrafter

    class Other(Drafter):
        def propose(self, ctx, k, sampling, rng):
            return Draft()

    assert NgramDrafter().replayable and HybridDrafter(NgramDrafter()).replayable
    assert not Other().replayable and not HybridDrafter(Other()).replayable
