"""How far a verify pass's logits move from one-token logits on llama.cpp (the near-tie bound).

    python benchmarks/logit_margins.py [--target qwen2.5-coder-1.5b] [--batch 4 5] [--no-repack]

Teacher-forces the HumanEval solutions in tests/data/humaneval_solutions.jsonl (prompt + canonical
solution, each problem on its own) through the target twice: one token per decode, as plain
decoding runs, and in batches of B tokens, as a verify pass over K = B - 1 drafts runs (every
batch has exactly B tokens; the last one of a problem overlaps the one before and its repeated
rows are dropped). At every position it compares the two rows of logits:

- margin shift: |(batched[a] - batched[b]) - (single[a] - single[b])| for the one-token pass's top
  two tokens a, b: how much the top-2 logit margin moved;
- argmax flip: the two passes pick different tokens.

Greedy speculative output can leave plain decoding's only where the top-2 margin is below the
shift, so the tests bound divergences by the largest shift measured here, plus a safety factor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "humaneval_solutions.jsonl"


def one_token_logits(backend, ids: list[int], start: int) -> np.ndarray:
    """ids [n] -> logits [n - start, V]: ids[:start] prefilled, then one token per decode."""
    backend.rollback(0)
    backend.forward(ids[:start], 0)
    return np.stack([backend.forward([t], 1)[0].copy() for t in ids[start:]])


def batched_logits(backend, ids: list[int], start: int, batch: int) -> np.ndarray:
    """ids [n] -> logits [n - start, V] from decodes of exactly `batch` tokens each."""
    backend.rollback(0)
    backend.forward(ids[:start], 0)
    rows: list[np.ndarray] = []
    pos = start
    while pos < len(ids):
        s = max(min(pos, len(ids) - batch), start)  # the last batch overlaps: keep its size
        backend.rollback(s)
        out = backend.forward(ids[s:s + batch], len(ids[s:s + batch]))
        rows.append(out[pos - s:].copy())
        pos = s + len(out)
    return np.concatenate(rows)


def compare(single: np.ndarray, batched: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """single, batched [n, V] -> (margin shift [n], argmax flip [n] bool, one-token margin [n])."""
    top = np.argsort(single, axis=1)[:, -2:]  # [n, 2]: second, first
    r = np.arange(len(single))
    m_single = single[r, top[:, 1]] - single[r, top[:, 0]]
    m_batched = batched[r, top[:, 1]] - batched[r, top[:, 0]]
    flips = batched.argmax(axis=1) != single.argmax(axis=1)
    return np.abs(m_batched - m_single), flips, m_single


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="qwen2.5-coder-1.5b", help="catalog name or GGUF file")
    ap.add_argument("--batch", type=int, nargs="+", default=[4, 5],
                    help="verify batch sizes (K + 1); each must be 4 or more")
    ap.add_argument("--start", type=int, default=1,
                    help="tokens prefilled before the first compared position")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-repack", action="store_true",
                    help="load the weights without repacking (llama.cpp's extra buffer types)")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    if min(args.batch) < 4 or args.start < 1:
        ap.error("--batch sizes must be >= 4 and --start >= 1")

    from draftwise.backends.llamacpp import LlamaCppBackend
    from draftwise.models.catalog import resolve

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    backend = LlamaCppBackend(resolve(args.target).ref, n_ctx=2048, threads=args.threads,
                              repack=not args.no_repack)
    print(f"target {args.target}, repack {'off' if args.no_repack else 'on'}, "
          f"{len(rows)} problems from {args.data.name}, batches of {args.batch}", flush=True)
    shifts: dict[int, list[np.ndarray]] = {b: [] for b in args.batch}
    flips: dict[int, list[np.ndarray]] = {b: [] for b in args.batch}
    flip_margins: dict[int, list[float]] = {b: [] for b in args.batch}
    for row in rows:
        ids = backend.tokenize(row["prompt"] + row["canonical_solution"])
        single = one_token_logits(backend, ids, args.start)
        for b in args.batch:
            shift, flip, margin = compare(single, batched_logits(backend, ids, args.start, b))
            shifts[b].append(shift)
            flips[b].append(flip)
            flip_margins[b].extend(margin[flip].tolist())
        print(f"  {row['task_id']}: {len(single)} positions", flush=True)
    backend.close()

    every = np.concatenate([s for b in args.batch for s in shifts[b]])
    for label, s, f, fm in [
            *((f"batch {b}", np.concatenate(shifts[b]), np.concatenate(flips[b]), flip_margins[b])
              for b in args.batch),
            ("all", every, np.concatenate([f for b in args.batch for f in flips[b]]),
             [m for b in args.batch for m in flip_margins[b]])]:
        where = ", ".join(f"{m:.3f}" for m in sorted(fm)) or "-"
        print(f"{label:>8}: {len(s)} positions, top-2 margin shift max {s.max():.3f} "
              f"mean {s.mean():.3f} p99 {np.quantile(s, 0.99):.3f}; "
              f"argmax flips {int(f.sum())} (one-token margins there: {where})")


if __name__ == "__main__":
    main()
