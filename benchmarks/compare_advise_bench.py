"""Predicted (advise.json) vs measured (bench.json) speedup per draft and K, as a Markdown table.

Usage: python benchmarks/compare_advise_bench.py ADVISE_JSON BENCH_JSON [--tolerance 0.15]
Exit status 1 when the configuration bench recommends is predicted off by more than the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys


def compare(advise: dict, bench: dict, tolerance: float) -> tuple[list[str], bool | None]:
    pred = {(a["draft"], a["temperature"], p["k"]): p["speedup"]
            for a in advise["advice"] for p in a["per_k"]}
    recs = {(r["draft"], r["temperature"], r["k"]) for r in bench["recommendations"]
            if r["beats_ar"]}
    lines = ["| draft | T | K | predicted | measured [95% CI] | error | |",
             "|---|---|---|---|---|---|---|"]
    ok = None  # None: bench recommended nothing that advise predicted
    exact = [s for s in bench["summaries"] if s.get("accept", "exact") == "exact"]  # advise: exact
    for s in exact:
        key = (s["draft"], s["temperature"], s["k"])
        if key not in pred or s["speedup"] is None:
            continue
        err = pred[key] / s["speedup"] - 1
        star = key in recs
        if star:
            ok = abs(err) <= tolerance
        lines.append(f"| {s['draft']} | {s['temperature']:g} | {s['k']} | {pred[key]:.2f} | "
                     f"{s['speedup']:.2f} [{s['speedup_lo']:.2f}, {s['speedup_hi']:.2f}] | "
                     f"{100 * err:+.0f}% | {'recommended' if star else ''} |")
    measured = {(s["draft"], s["temperature"], s["k"]): s["speedup"] for s in exact}
    for t in dict.fromkeys(a["temperature"] for a in advise["advice"]):
        best = max((a for a in advise["advice"] if a["temperature"] == t),
                   key=lambda a: a["best_speedup"])
        m = measured.get((best["draft"], t, best["best_k"]))
        got = f"measured {m:.2f} ({100 * (best['best_speedup'] / m - 1):+.0f}%)" if m else \
            "not measured by bench"
        lines.append(f"\nadvise's pick at T={t:g}: {best['draft']} K={best['best_k']}, predicted "
                     f"{best['best_speedup']:.2f}, {got}")
    return lines, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("advise_json")
    ap.add_argument("bench_json")
    ap.add_argument("--tolerance", type=float, default=0.15)
    a = ap.parse_args()
    with open(a.advise_json) as f1, open(a.bench_json) as f2:
        lines, ok = compare(json.load(f1), json.load(f2), a.tolerance)
    print("\n".join(lines))
    if ok is None:
        print("\nbench recommends no configuration that advise predicted (nothing beat AR, or "
              "the recommendation is adaptive K)")
        return 0
    print(f"\nrecommended configuration within {100 * a.tolerance:.0f}%: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
