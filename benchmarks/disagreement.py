"""Where drafts disagree with the target: held-out positions binned by the target's confidence.

    python benchmarks/disagreement.py coder-0.5b-tqa4a qwen2.5-coder-0.5b-q4_0 coder-0.5b-tqa4a \
        [--category translation] [--threads 1]

Reads the target's greedy continuations of a distill run's held-out prompts (eval/conts/ of
<cache>/distill/RUN), teacher-forces the target and each named model over them, and prints, per
bin of the target's top-1 probability p1, how many positions fall in it and each model's greedy
agreement there; then, over each model's disagreements, the rank of the target's token in the
model's own distribution, and against the first model the positions only one of the two gets
right (sign test). A model may be another quantization of the target: its agreement is
what the target's own weights reach, so the positions it misses are near-ties no draft can be
expected to call.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from draftwise.bench.advise import greedy_agreement, teacher_forced
from draftwise.config import SamplingConfig
from draftwise.distill.evaluate import sign_test
from draftwise.distill.rundir import distill_root
from draftwise.loader import BackendOptions, load_backend
from draftwise.sampling import probs

BINS = [0.0, 0.5, 0.8, 0.95, 1.01]
RANKS = [2, 3, 5, 10]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--category", default="translation")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    run = distill_root() / a.run
    target_name = json.loads((run / "options.json").read_text())["target"]
    recs = [json.loads(f.read_text()) for f in sorted((run / "eval" / "conts").glob("*.json"))]
    recs = [r for r in recs if r["group"] == "trained" and r["category"] == a.category
            and r["cont"]]
    opts = BackendOptions(n_ctx=2048, threads=a.threads)
    tgt = load_backend(target_name, opts)
    p1 = []
    for r in recs:
        p = probs(teacher_forced(tgt, r["prompt"], r["cont"]), SamplingConfig(temperature=1.0))
        p1.append(p.max(axis=1))
    n_vocab = tgt.vocab.n_vocab
    tgt.close()
    p1 = np.concatenate(p1)
    bins = np.digitize(p1, BINS) - 1
    print(f"{a.run}: {len(recs)} held-out {a.category} prompts, {len(p1)} positions, "
          f"target {target_name}")
    head = "p1 bin        positions  share " + "".join(f" {m[:24]:>24}" for m in a.models)
    rows = [f"[{BINS[i]:.2f}, {min(BINS[i + 1], 1):.2f}) " + f"{int((bins == i).sum()):>9}"
            f" {100 * (bins == i).mean():5.1f}%" for i in range(len(BINS) - 1)]
    ranks_out, first = [], None
    for m in a.models:
        be = load_backend(m, opts)
        agree, rank = [], []
        for r in recs:
            dl = teacher_forced(be, r["prompt"], r["cont"])[:, :n_vocab]
            agree.append(greedy_agreement(dl, r["cont"], n_vocab))
            tok = dl[np.arange(len(r["cont"])), r["cont"]]
            rank.append(1 + (dl > tok[:, None]).sum(axis=1))
        be.close()
        agree, rank = np.concatenate(agree), np.concatenate(rank)
        for i in range(len(rows)):
            sel = bins == i
            rows[i] += f" {100 * agree[sel].mean() if sel.any() else float('nan'):23.1f}%"
        miss = rank[agree == 0]
        ranks_out.append(f"{m}: agreement {100 * agree.mean():.1f}%, {len(miss)} disagreements; "
                         "target's token within the model's top "
                         + ", ".join(f"{k}: {100 * (miss <= k).mean():.0f}%" for k in RANKS)
                         + f"; disagreements at p1 < 0.5: {100 * (p1[agree == 0] < 0.5).mean():.0f}%")
        if first is None:
            first = agree
        else:
            g, lost = int((agree > first).sum()), int((agree < first).sum())
            ranks_out[-1] += (f"; against {a.models[0]}: {g} positions only this one gets right, "
                              f"{lost} only that one (sign test p = {sign_test(g, lost):.2g})")
    print(head)
    print("\n".join(rows))
    print("\n".join(ranks_out))


if __name__ == "__main__":
    main()
