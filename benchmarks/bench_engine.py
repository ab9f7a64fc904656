"""AR vs speculative decoding, interleaved in one process, over HumanEval prompts.

    python benchmarks/bench_engine.py --target qwen2.5-coder-1.5b-q8_0 --draft qwen2.5-coder-0.5b \
        --k 2 3 4 5 --prompts 10 --max-tokens 128
    python benchmarks/bench_engine.py --backend transformers --dtype bfloat16 ...

Per prompt the configurations run back to back in an order rotated by the prompt index, so that a
slow phase of the machine hits all of them alike. Prints per K: tok/s AR and SD (mean time per
token), speedup decode-only (the rounds after prefill) and end to end (prefill included: the target
and, for SD, the draft prefill the prompt), alpha, tau, the time split and how many outputs are
token-identical to AR (with AR's top-2 logit margin where they are not).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from draftwise.compare import ar_reference, divergence
from draftwise.config import GenerateConfig, SpecConfig
from draftwise.engine import Engine
from draftwise.loader import BackendOptions, open_engine
from draftwise.policy import FixedK

EVAL = Path(__file__).resolve().parents[2] / "shared" / "evaldata" / "HumanEval.jsonl"


def humaneval_prompts(n: int, skip: int = 0, path: Path = EVAL) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"HumanEval prompts not found at {path}; pass --eval HumanEval.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["prompt"] for r in rows[skip:skip + n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="qwen2.5-coder-1.5b-q8_0")
    ap.add_argument("--draft", default="qwen2.5-coder-0.5b")
    ap.add_argument("--k", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval", type=Path, default=EVAL, help="HumanEval.jsonl")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args()

    with open_engine(a.target, a.draft, BackendOptions(a.backend, a.threads, 4096, a.dtype),
                     SpecConfig(k=max(a.k))) as engine:
        rows, backend = run_all(engine, a)
        report(rows, backend, a)


def run_all(engine: Engine, a) -> tuple[dict, str]:
    plain = Engine(engine.target)  # the same target without a draft
    cfg = GenerateConfig(max_tokens=a.max_tokens)
    prompts = humaneval_prompts(a.prompts, path=a.eval)
    engine.generate("def warmup():\n", GenerateConfig(max_tokens=8))
    keys = ["AR", *a.k]
    rows = {k: [] for k in keys}
    for i, prompt in enumerate(prompts):
        gens = {}
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:  # who runs first rotates
            gens[key] = (plain.generate(prompt, cfg) if key == "AR" else
                         engine.generate(prompt, cfg, policy=FixedK(key)))
        ar = gens["AR"]
        margins: list[float] = []  # AR's top-2 margins, from an untimed run when first needed
        for key in keys:
            g = gens[key]
            if g.tokens != ar.tokens and not margins:
                margins = ar_reference(engine.target, prompt, cfg)[1]
            div = divergence(g.tokens, ar.tokens, margins)
            rows[key].append(dict(s=g.stats.to_dict(), same=div.identical, margin=div.ar_margin))
        print(f"prompt {i + 1}/{len(prompts)} done", flush=True)
    return rows, engine.target.name


def report(rows: dict, backend: str, a) -> None:
    def per_token(rs, prefill=False):  # seconds per generated token over the whole set
        t = sum(r["s"]["t_decode"] + (r["s"]["t_prefill"] if prefill else 0.0) for r in rs)
        return t / sum(r["s"]["n_generated"] for r in rs)

    ar_t, ar_e2e = per_token(rows["AR"]), per_token(rows["AR"], prefill=True)
    print(f"\ntarget {a.target}  draft {a.draft}  backend {backend}  "
          f"{len(rows['AR'])} HumanEval prompts x {a.max_tokens} tokens, greedy")
    print("tok/s and speedup: decode-only (after prefill); e2e: prefill included")
    print(f"{'config':>6} {'tok/s':>7} {'speedup':>8} {'e2e tok/s':>9} {'e2e':>6} {'alpha':>6} "
          f"{'tau':>5} {'draft%':>7} {'target%':>8} {'ovh%':>5} {'same':>6}  divergence margins")
    out = []
    for key, rs in rows.items():
        t, e2e = per_token(rs), per_token(rs, prefill=True)
        tot = sum(r["s"]["t_decode"] for r in rs)
        split = [100 * sum(r["s"][f] for r in rs) / tot for f in ("t_draft", "t_target", "t_overhead")]
        drafted = sum(r["s"]["n_drafted"] for r in rs)
        alpha = sum(r["s"]["n_accepted"] for r in rs) / drafted if drafted else 0.0
        tau = sum(r["s"]["n_generated"] for r in rs) / sum(r["s"]["n_rounds"] for r in rs)
        same = sum(r["same"] for r in rs)
        margins = [round(r["margin"], 3) for r in rs if not r["same"] and r["margin"] is not None]
        speedups = [ar["s"]["t_decode"] / r["s"]["t_decode"] for ar, r in zip(rows["AR"], rs)]
        print(f"{'K=' + str(key) if key != 'AR' else 'AR':>6} {1 / t:7.2f} {ar_t / t:7.2f}x "
              f"{1 / e2e:9.2f} {ar_e2e / e2e:5.2f}x "
              f"{alpha:6.2f} {tau:5.2f} {split[0]:6.1f}% {split[1]:7.1f}% {split[2]:4.1f}% "
              f"{same:>3}/{len(rs)}  {margins or ''}"
              f"  (per-prompt speedup median {statistics.median(speedups):.2f}x)")
        out.append(dict(config=str(key), tok_s=1 / t, speedup=ar_t / t, e2e_tok_s=1 / e2e,
                        e2e_speedup=ar_e2e / e2e, alpha=alpha, tau=tau,
                        draft_pct=split[0], target_pct=split[1], overhead_pct=split[2],
                        identical=same, n=len(rs), margins=margins))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
