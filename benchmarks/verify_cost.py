"""Cost of one llama.cpp forward over n = 1..9 new tokens (what verifying K = n - 1 drafts costs).

    python benchmarks/verify_cost.py qwen2.5-coder-1.5b-q8_0 qwen2.5-coder-0.5b-q4_0

Prints the median of 7 timings per n, after 150 tokens of context (HumanEval solutions text),
and the prompt rate: a 150-token prefill from an empty cache (median of 3), in tokens/s.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from draftwise.loader import BackendOptions, load_backend

TEXT = Path(__file__).resolve().parents[1] / "tests" / "data" / "humaneval_solutions.jsonl"
CTX, REPS = 150, 7


def main(names: list[str]) -> None:
    for name in names:
        b = load_backend(name, BackendOptions(n_ctx=2048))
        ids = b.tokenize(TEXT.read_text())[:CTX + 9]
        pre = []
        for _ in range(3):
            b.rollback(0)
            t0 = time.perf_counter()
            b.forward(ids[:CTX], 0)
            pre.append(time.perf_counter() - t0)
        ms = {}
        for n in range(1, 10):
            times = []
            for _ in range(REPS):
                b.rollback(CTX)
                t0 = time.perf_counter()
                b.forward(ids[CTX:CTX + n], n)
                times.append(time.perf_counter() - t0)
            ms[n] = 1e3 * statistics.median(times)
        print(f"{name}: " + " ".join(f"{n}:{v:.0f}" for n, v in ms.items()) + " ms  ratio "
              + " ".join(f"{v / ms[1]:.2f}" for v in ms.values())
              + f"  prefill {CTX / statistics.median(pre):.0f} tok/s", flush=True)
        b.close()


if __name__ == "__main__":
    main(sys.argv[1:] or ["qwen2.5-coder-1.5b-q8_0"])
