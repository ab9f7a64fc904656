"""How much of distill's teacher-forced evaluation the target took before eval kept the rows
it decodes its continuations from (so that it no longer teacher-forces them).

    python benchmarks/eval_target_share.py RUN TARGET.gguf DRAFT.gguf [ADAPTER.gguf]
        [--every 5] [--threads 2]

Teacher-forces every `every`-th cached continuation in RUN's eval/conts/ with the target, the
draft and (given) the draft with the adapter, and prints the seconds each took.
"""

from __future__ import annotations

import argparse
import time

from draftwise.backends.llamacpp import LlamaCppBackend
from draftwise.bench.advise import teacher_forced
from draftwise.distill.rundir import RunDir, read_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("target")
    ap.add_argument("draft")
    ap.add_argument("adapter", nargs="?")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    files = sorted((RunDir.for_name(a.run).path / "eval" / "conts").glob("*.json"))
    recs = [r for r in map(read_json, files[::a.every]) if r["cont"]]
    bes = {"target": LlamaCppBackend(a.target, threads=a.threads),
           "draft": LlamaCppBackend(a.draft, threads=a.threads)}
    if a.adapter:
        bes["draft+adapter"] = LlamaCppBackend(a.draft, threads=a.threads, lora=a.adapter)
    secs = dict.fromkeys(bes, 0.0)
    for r in recs:
        for k, be in bes.items():
            t0 = time.perf_counter()
            teacher_forced(be, r["prompt"], r["cont"])
            secs[k] += time.perf_counter() - t0
    for be in bes.values():
        be.close()
    total = sum(secs.values())
    print(f"{len(recs)} of {len(files)} continuations, "
          f"{sum(len(r['cont']) for r in recs)} positions")
    for k, s in secs.items():
        print(f"{k:14s} {s:7.1f} s  {100 * s / total:5.1f}%")


if __name__ == "__main__":
    main()
