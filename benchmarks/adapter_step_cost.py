"""What a LoRA adapter costs a llama.cpp draft per forward, by batch size.

    python benchmarks/adapter_step_cost.py BASE.gguf ADAPTER.gguf [--threads 2] [--repeats 12]

Loads BASE twice, alone and with ADAPTER (a `distill --adapter` LoRA GGUF), and times, alternating
between the two, the forwards a draft makes: a 69-token prompt prefill (the translation
prompts' mean length; no logits), a one-token step (a drafted token) and catch-ups of 2 and 4
tokens, one row of logits each (2: after a round that accepted all K drafts, the last draft and
the bonus token; 4: after rounds the draft sat out). Prints the medians and the adapter's ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from draftwise.backends.llamacpp import LlamaCppBackend

SHAPES = {"prefill69": 69, "step1": 1, "step2": 2, "step4": 4}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("adapter")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=12)
    a = ap.parse_args()
    ids = [int(x) for x in np.random.default_rng(0).integers(1000, 20000, 69)]
    bes = {"stock": LlamaCppBackend(a.base, n_ctx=1024, threads=a.threads),
           "lora": LlamaCppBackend(a.base, n_ctx=1024, threads=a.threads, lora=a.adapter)}
    times: dict[str, dict[str, list[float]]] = {k: {s: [] for s in SHAPES} for k in bes}
    for _ in range(a.repeats):
        for name, be in bes.items():
            for shape, n in SHAPES.items():
                for i in range(1 if n == 69 else 6):
                    be.rollback(0 if n == 69 else 69)
                    t0 = time.perf_counter()
                    be.forward(ids[i:i + n], 0 if n == 69 else 1)
                    times[name][shape].append(time.perf_counter() - t0)
    for be in bes.values():
        be.close()
    med = {k: {s: float(np.median(v)) for s, v in d.items()} for k, d in times.items()}
    for name, d in med.items():
        print(f"{name:5s} " + "  ".join(f"{s} {1e3 * v:6.2f} ms" for s, v in d.items()))
    print("lora/stock " + "  ".join(f"{s} {med['lora'][s] / med['stock'][s]:.3f}" for s in SHAPES))


if __name__ == "__main__":
    main()
