"""Decode rate of 4 sequences in one batch (prefill excluded) at fixed K and at load-aware K: does
load-aware K pick as well as the best fixed K?

    python benchmarks/batch_k.py 0 1 2 3 load

Prompts: the first 4 HumanEval prompts (raw completion), 64 new tokens each, greedy.
"""

from __future__ import annotations

import argparse
import time

from bench_engine import humaneval_prompts  # a sibling script: benchmarks/ is on sys.path

from draftwise.config import GenerateConfig, SpecConfig
from draftwise.engine import Batch, Engine, Run
from draftwise.loader import BackendOptions, open_engine
from draftwise.policy import FixedK
from draftwise.policy.load import LoadAwareK


def decode_rate(eng: Engine, prompts: list[str], label: str, load: LoadAwareK,
                max_tokens: int) -> str:
    """One batch of the prompts at K = label (or load-aware: "load"); the rate after prefill."""
    batch = Batch(eng, len(prompts), 256, load)
    cfg = GenerateConfig(max_tokens=max_tokens)
    runs = [Run(eng, eng.prompt_ids(p), cfg, None if label == "load" else FixedK(int(label)))
            for p in prompts]
    for r in runs:
        batch.add(r)
    while not all(r.prefilled for r in runs):
        batch.step()
    n0, t0, ks = sum(len(r.tokens) for r in runs), time.perf_counter(), []
    while batch.runs:
        ks += [rd.k for _, rd in batch.step()]
        for r in [r for r in batch.runs if r.done]:
            batch.remove(r)
    dt = time.perf_counter() - t0
    n = sum(len(r.tokens) for r in runs) - n0
    return (f"K={label}: {n} tokens in {dt:.1f} s = {n / dt:.1f} tok/s; K used: "
            + " ".join(f"{k}:{ks.count(k)}" for k in sorted(set(ks))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ks", nargs="+", help="K values and/or 'load'")
    ap.add_argument("--target", default="qwen2.5-coder-1.5b-q8_0")
    ap.add_argument("--draft", default="qwen2.5-coder-0.5b-q4_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    prompts = humaneval_prompts(4)
    with open_engine(a.target, a.draft, BackendOptions(threads=a.threads, n_ctx=1024, n_seq=4),
                     SpecConfig.parse("auto")) as eng:
        load = LoadAwareK()  # shared by the "load" rows: it keeps learning costs
        for label in a.ks:
            print(decode_rate(eng, prompts, label, load, a.max_tokens), flush=True)


if __name__ == "__main__":
    main()
