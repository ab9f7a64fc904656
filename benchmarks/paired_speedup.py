"""One bench configuration against another, paired: decode tok/s ratio on each (prompt, repeat).

    python benchmarks/paired_speedup.py --base "BASE LABEL" BENCH_DIR/bench.json [MORE/bench.json]

bench's speedups are each against AR, so two drafts' intervals overlap even when one is faster
on nearly every prompt. This divides each configuration's decode tok/s by BASE LABEL's (e.g.
"qwen2.5-coder-0.5b-q4_0 K=3", the labels in bench.json's summaries) on the same prompt and
repeat, and prints the geometric mean with a 95% percentile-bootstrap interval; several bench
runs of the same configurations pool their pairs.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from draftwise.bench.summary import bootstrap_ci


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench_json", nargs="+")
    ap.add_argument("--base", required=True)
    a = ap.parse_args()
    runs: dict[str, dict[tuple, float]] = {}
    for i, path in enumerate(a.bench_json):
        for r in json.load(open(path))["runs"]:
            runs.setdefault(r["label"], {})[(i, r["prompt_id"], r["repeat"])] = \
                r["n_generated"] / r["t_decode"]
    if a.base not in runs:
        raise SystemExit(f"no configuration {a.base!r}; labels: {', '.join(runs)}")
    base = runs[a.base]
    for label, tok_s in runs.items():
        if label == a.base:
            continue
        pairs = sorted(set(tok_s) & set(base))
        log_ratio = np.log([tok_s[p] / base[p] for p in pairs])
        lo, hi = bootstrap_ci(log_ratio)
        print(f"{label} / {a.base}: x{np.exp(log_ratio.mean()):.3f} "
              f"[95% CI {lo:.3f}, {hi:.3f}] over {len(pairs)} pairs")


if __name__ == "__main__":
    main()
