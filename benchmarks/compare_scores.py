"""How far the target's rows kept while gen decodes (gen/scores.npz, batched) are from the
score stage's teacher-forced rows of the same continuations in an older run of the same data.

    python benchmarks/compare_scores.py NEW_RUN OLD_RUN

NEW_RUN kept its target continuations' scores in gen; OLD_RUN scored them in the score stage.
Prints, over those positions: how often the top-1 token is the same, |p1 - p1'| and the total
variation between the two top-k distributions (each token outside a row's top-k counted as 0).
"""

from __future__ import annotations

import argparse

import numpy as np

from draftwise.distill.data import gen_scores, read_examples
from draftwise.distill.rundir import RunDir
from draftwise.distill.score import read_scores


def tv_top_k(a_idx, a_logp, b_idx, b_logp) -> float:
    """Total variation between two rows' top-k distributions: idx [k], logp [k]."""
    pa = dict(zip(a_idx.tolist(), np.exp(a_logp.astype(np.float64))))
    pb = dict(zip(b_idx.tolist(), np.exp(b_logp.astype(np.float64))))
    return 0.5 * sum(abs(pa.get(t, 0.0) - pb.get(t, 0.0)) for t in pa.keys() | pb.keys())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new")
    ap.add_argument("old")
    args = ap.parse_args()
    new, old = RunDir.for_name(args.new), RunDir.for_name(args.old)
    ex_new, ex_old = read_examples(new), read_examples(old)
    if [(e.prompt, e.cont) for e in ex_new] != [(e.prompt, e.cont) for e in ex_old]:
        raise SystemExit("the two runs' training sequences differ: compare runs of the same data")
    kept, forced = gen_scores(new), read_scores(old, len(ex_old))
    if not kept:
        raise SystemExit(f"{args.new} kept no scores in gen")
    same, dp1, tv = [], [], []
    for seq, a in kept.items():
        b = forced[seq]
        same.append(a.idx[:, 0] == b.idx[:, 0])
        dp1.append(np.abs(np.exp(a.logp[:, 0].astype(np.float64))
                          - np.exp(b.logp[:, 0].astype(np.float64))))
        tv += [tv_top_k(a.idx[i], a.logp[i], b.idx[i], b.logp[i]) for i in range(len(a.rest))]
    same, dp1, tv = np.concatenate(same), np.concatenate(dp1), np.array(tv)
    print(f"{len(kept)} continuations, {len(same)} positions: top-1 the same at "
          f"{same.mean():.2%}; |p1 - p1'| mean {dp1.mean():.4f}, p99 {np.quantile(dp1, 0.99):.4f}, "
          f"max {dp1.max():.4f}; TV of the top-k mean {tv.mean():.4f}, "
          f"p99 {np.quantile(tv, 0.99):.4f}, max {tv.max():.4f}")


if __name__ == "__main__":
    main()
