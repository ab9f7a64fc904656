"""Cost of one llama.cpp forward over n tokens in one sequence vs spread over S sequences: what a
batched server's iteration costs, and its split into a fixed part and a part per token.

    python benchmarks/batch_cost.py [qwen2.5-coder-1.5b-q8_0] [--seqs 4] [--threads 2]

Every sequence first holds 150 tokens of context (HumanEval solutions text); then n = S, 2S, 3S,
4S new tokens go in one sequence, or n / S in each of S sequences; median of 7 timings each. The
line fitted through all of them (least squares) is the fixed cost and the cost per token.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from draftwise.backends.base import Feed
from draftwise.loader import BackendOptions, load_backend

TEXT = Path(__file__).resolve().parents[1] / "tests" / "data" / "humaneval_solutions.jsonl"
CTX, REPS = 150, 7


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="qwen2.5-coder-1.5b-q8_0")
    ap.add_argument("--seqs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    s = a.seqs
    b = load_backend(a.model, BackendOptions(n_ctx=1024, n_seq=s, threads=a.threads))
    ids = b.tokenize(TEXT.read_text())[:CTX + 4 * s]
    b.forward_many([Feed(q, ids[:CTX]) for q in range(s)])

    def timed(feeds: list[Feed]) -> float:
        times = []
        for _ in range(REPS):
            for q in range(s):
                b.rollback_seq(q, CTX)
            t0 = time.perf_counter()
            b.forward_many(feeds)
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    xs, ys = [1], [timed([Feed(0, ids[CTX:CTX + 1])])]
    rows = [f"1 token: {ys[0]:.0f} ms"]
    for n in (s, 2 * s, 3 * s, 4 * s):
        one = timed([Feed(0, ids[CTX:CTX + n])])
        spread = timed([Feed(q, ids[CTX:CTX + n // s]) for q in range(s)])
        xs += [n, n]
        ys += [one, spread]
        rows.append(f"{n} tokens: {one:.0f} ms in one sequence, {spread:.0f} ms over {s}")
    b.close()
    per_token, fixed = np.polyfit(xs, ys, 1)
    print(f"{a.model}, {CTX} tokens of context per sequence, median of {REPS}:")
    print("\n".join(rows))
    print(f"fit: {fixed:.0f} ms + {per_token:.1f} ms per token")


if __name__ == "__main__":
    main()
