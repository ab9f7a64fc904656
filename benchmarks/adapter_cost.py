"""What a LoRA adapter costs llama.cpp per draft step: the same model with and without it.

python benchmarks/adapter_cost.py coder-0.5b-tqa3a [--threads 2] [--reps 7] [--steps 32]

NAME is a `distill --adapter` model. Its base file is loaded twice, once with the adapter; both
decode the same tokens after the same 128-token prompt: one-token steps (what a draft does) and
4-token batches (a verify of K = 3). Rounds alternate between the two, so that machine load hits
both alike; prints the median milliseconds per step and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

from draftwise.loader import BackendOptions, load_backend
from draftwise.models.catalog import resolve


def timed_steps(be, prompt: list[int], n: int, steps: int) -> float:
    """Median seconds of `steps` forwards of n tokens each, after the prompt, rolled back."""
    be.rollback(0)
    be.forward(prompt, 1)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        be.forward([prompt[i % len(prompt)]] * n, n)
        times.append(time.perf_counter() - t)
        be.rollback(len(prompt))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="a `distill --adapter` model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=32)
    a = ap.parse_args()
    ref = resolve(a.model)
    if ref.lora is None:
        raise SystemExit(f"{a.model} has no adapter; give a model made by `distill --adapter`")
    opts = BackendOptions(threads=a.threads, n_ctx=512)
    plain, with_lora = load_backend(ref.ref, opts), load_backend(a.model, opts)
    prompt = plain.tokenize("def fibonacci(n):\n    " * 16)[:128]
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(a.reps):
        for label, be in (("base", plain), ("adapter", with_lora)):
            for n in (1, 4):
                times.setdefault((label, n), []).append(timed_steps(be, prompt, n, a.steps))
    print(f"{ref.ref} with and without {ref.lora}, {a.threads} threads, "
          f"median of {a.reps} rounds x {a.steps} steps")
    for n in (1, 4):
        b, w = (1000 * statistics.median(times[(k, n)]) for k in ("base", "adapter"))
        print(f"  {n} token{'s' if n > 1 else ''}: base {b:.2f} ms, adapter {w:.2f} ms, "
              f"x{w / b:.3f}")


if __name__ == "__main__":
    main()
