"""Adaptive K against fixed K without timing noise: replay each policy on recorded acceptance.

On a 2-core machine one run of a prompt varies by 10-15% in speed, more than adaptive and fixed K
differ. So, as `advise` does:
1. collect: the target's greedy continuation of each prompt and the draft's teacher-forced
   agreement with it -> JSON. Greedy acceptance replays exactly: a round at position i with K
   drafts accepts min(K, the run of agreement from i), as in the engine.
2. replay: each policy "generates" every continuation in prompt order (adaptive K keeps one
   controller, as `bench` does), paying per-round costs measured by a `bench` run of the same pair
   (mean draft / target seconds per round of AR and each fixed K), each jittered by 5% as the
   controller sees it. Prints the speedup over AR per policy (geometric mean over prompts).

  python benchmarks/replay_policies.py collect --target qwen2.5-coder-1.5b-q8_0 \\
      --draft qwen2.5-coder-0.5b-q4_0 --n-prompts 6 --offset 1 --out agreement.json
  python benchmarks/replay_policies.py replay agreement.json --costs .../bench.json [--k-max 8]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from draftwise.policy import AdaptiveK, FixedK, KPolicy

CATEGORIES = ["code", "chat", "summarization", "translation", "qa", "math", "rag"]
# Measured with the Q8_0 1.5B target and Q4_0 0.5B draft (llama.cpp, 2 threads): the first
# verify after prefill is slower, and a draft that skipped plain rounds first catches up.
FIRST_ROUND_S, CATCH_UP_S = 0.025, 0.033
# Verify cost of n tokens relative to 1 token (Q8_0, benchmarks/verify_cost.py), for the K the
# bench run did not measure.
VERIFY_REL = [1.0, 1.14, 1.30, 1.46, 2.19, 2.34, 2.57, 2.12, 2.93]


def collect(a) -> None:
    from draftwise.bench.advise import continuation, greedy_agreement, teacher_forced
    from draftwise.bench.prompts import load_prompts
    from draftwise.loader import load_backend

    tgt, dft = load_backend(a.target), load_backend(a.draft)
    out = []
    for p in load_prompts(a.category or CATEGORIES, None, a.n_prompts, a.offset):
        ids = tgt.tokenize(p.render(tgt.apply_chat_template))
        cont, _ = continuation(tgt, ids, a.max_tokens)
        if len(cont) >= 2:
            acc = greedy_agreement(teacher_forced(dft, ids, cont), cont, tgt.vocab.n_vocab)
            out.append({"id": p.id, "category": p.category, "agree": acc.astype(int).tolist()})
            print(f"{p.id}: {len(cont)} tokens, agreement {acc.mean():.2f}", flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f)


def round_costs(bench_json: str, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(t_draft [k_max + 1], t_target [k_max + 1]) seconds per round with K = 0..k_max drafts,
    from the AR and fixed-K runs of a bench.json; unmeasured K scale the nearest measured one."""
    sums: dict[int, list[float]] = {}
    for r in json.load(open(bench_json))["runs"]:
        k = 0 if r["config"]["draft"] == "none" else r["config"]["k"]
        if k is not None and r["config"]["temperature"] == 0:
            s = sums.setdefault(k, [0.0, 0.0, 0])
            s[0] += r["t_draft"]
            s[1] += r["t_target"]
            s[2] += len(r["rounds"]) or r["n_generated"]
    step = np.mean([s[0] / s[2] / k for k, s in sums.items() if k > 0])
    t_target = np.zeros(k_max + 1)
    for k in range(k_max + 1):
        near = min(sums, key=lambda m: abs(m - k))
        t_target[k] = sums[near][1] / sums[near][2] * VERIFY_REL[k] / VERIFY_REL[near]
    return step * np.arange(k_max + 1), t_target


def play(policy: KPolicy, agree: list[int], costs, rng) -> float:
    """Speedup over AR of one generation of len(agree) tokens under policy."""
    t_draft, t_target = costs
    n = len(agree)
    run = np.zeros(n + 1, dtype=int)  # run[i]: agreeing tokens from position i on
    for i in range(n - 1, -1, -1):
        run[i] = run[i + 1] + 1 if agree[i] else 0
    policy.reset()
    i, t, behind = 0, 0.0, False
    while i < n:
        k = min(policy.next_k(), n - i - 1)
        n_acc = min(k, run[i])
        td = (t_draft[k] + (CATCH_UP_S if behind and k else 0.0)) * math.exp(rng.normal(0, .05))
        tt = (t_target[k] + (FIRST_ROUND_S if i == 0 else 0.0)) * math.exp(rng.normal(0, .05))
        policy.observe(k, n_acc, td, tt)
        behind, t, i = k == 0, t + td + tt, i + n_acc + 1
    return n * t_target[0] / t


def replay(a) -> None:
    data = json.load(open(a.agreement))
    costs = round_costs(a.costs, a.k_max)
    print(f"{len(data)} prompts; ms per round for K = 0..{a.k_max}: "
          + " ".join(f"{1e3 * (d + t):.0f}" for d, t in zip(*costs)))
    policies = {f"K={k}": (lambda k=k: FixedK(k)) for k in range(1, a.k_max + 1)}
    policies["adaptive"] = lambda: AdaptiveK(a.k_max, min(3, a.k_max))
    for name, make in policies.items():
        logs = []
        for seed in range(a.seeds):
            rng, pol = np.random.default_rng(seed), make()
            logs += [math.log(play(pol, d["agree"], costs, rng)) for d in data]
        print(f"{name:9s} {math.exp(np.mean(logs)):.3f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--target", required=True)
    c.add_argument("--draft", required=True)
    c.add_argument("-c", "--category", action="append")
    c.add_argument("--n-prompts", type=int, default=6)
    c.add_argument("--offset", type=int, default=1)
    c.add_argument("--max-tokens", type=int, default=128)
    c.add_argument("--out", required=True)
    r = sub.add_parser("replay")
    r.add_argument("agreement")
    r.add_argument("--costs", required=True, help="bench.json of the same pair (AR and fixed K)")
    r.add_argument("--k-max", type=int, default=3)
    r.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    collect(a) if a.step == "collect" else replay(a)


if __name__ == "__main__":
    main()
