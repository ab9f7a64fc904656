"""Stage `score`: the target's distribution at every continuation position, teacher-forced
through llama.cpp, kept as top-k log-probabilities plus the mass of all other tokens (topk.py).
Shards of SHARD sequences are written as score/shard-NNNNN.npz; a killed run rescores only the
missing shards. The target's own continuations come scored from gen (its rows as it decoded
them): only the draft's are teacher-forced. With --loss ce the rows are the continuation's own
tokens (hard labels, k = 1): no target pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from draftwise.backends.base import Backend
from draftwise.bench.advise import teacher_forced
from draftwise.distill.data import Example
from draftwise.distill.rundir import RunDir, read_json
from draftwise.distill.topk import Scores, load_scores, save_scores, top_k

SHARD = 8


def labels(e: Example) -> Scores:
    """Hard labels: each continuation token with probability 1 (k = 1, nothing else)."""
    n = len(e.cont)
    return Scores(np.array(e.cont, dtype=np.int32)[:, None], np.zeros((n, 1), np.float16),
                  np.zeros(n, np.float32))


def target_scores(target: Backend, k: int) -> Callable[[Example], Scores]:
    """The target's top-k at every continuation position, teacher-forced; consecutive
    continuations of one prompt reuse its cached prefix."""
    held: list[int] = []

    def score(e: Example) -> Scores:
        nonlocal held
        logits = teacher_forced(target, e.prompt, e.cont, cached=e.prompt == held)
        held = e.prompt
        return top_k(logits, k)
    return score


def shard_path(run: RunDir, j: int):
    return run.path / "score" / f"shard-{j:05d}.npz"


def run_score(run: RunDir, examples: list[Example], score: Callable[[Example], Scores],
              given: dict[int, Scores] | None = None, progress=None) -> dict:
    """Write the missing shards (score: labels or target_scores; given: seq -> Scores already
    known, from gen), then score/done.json; returns done.json."""
    if run.is_done("score"):
        return read_json(run.done("score"))
    run.stage("score")
    given = given or {}
    n_shards = -(-len(examples) // SHARD)
    task = progress.add_task("score", total=len(examples), info="") if progress else None
    t0, n_pos = time.perf_counter(), 0
    for j in range(n_shards):
        chunk = examples[j * SHARD:(j + 1) * SHARD]
        path = shard_path(run, j)
        if not path.is_file():
            parts = {}
            for e in chunk:
                if e.seq in given:
                    parts[e.seq] = given[e.seq]
                else:
                    parts[e.seq] = score(e)
                    n_pos += len(e.cont)
                if progress:
                    dt = time.perf_counter() - t0
                    progress.update(task, advance=1, info=f"{n_pos / dt:.0f} positions/s")
            save_scores(path, parts)
        elif progress:
            progress.update(task, advance=len(chunk))
    rest = np.concatenate([np.load(shard_path(run, j))["rest"] for j in range(n_shards)])
    k = int(np.load(shard_path(run, 0))["idx"].shape[1])
    info = {"n_positions": int(len(rest)), "top_k": k, "from_gen": len(given),
            "rest_mass_mean": float(rest.mean()), "rest_mass_p90": float(np.quantile(rest, 0.9))}
    run.mark_done("score", info)
    return info


def read_scores(run: RunDir, n_examples: int) -> dict[int, Scores]:
    """seq -> Scores, from every shard."""
    return {seq: s for j in range(-(-n_examples // SHARD))
            for seq, s in load_scores(shard_path(run, j)).items()}
