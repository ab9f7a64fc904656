"""Stage `score`: the target's distribution at every continuation position, teacher-forced
through llama.cpp, kept as top-k log-probabilities plus the mass of all other tokens.

A full row is as wide as the vocabulary (152k floats for Qwen); top-32 with the rest's mass is
32 x (int32 + float16) + float32 = 196 bytes per position. Shards of SHARD sequences are written
as score/shard-NNNNN.npz (idx int32 [N, k], logp float16 [N, k], rest float32 [N], offsets
int64 [n + 1] into the rows, seqs int64 [n]); a killed run rescores only the missing shards.
With --loss ce the rows are the continuation's own tokens (hard labels, k = 1): no target pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from draftwise.backends.base import Backend
from draftwise.bench.advise import teacher_forced
from draftwise.distill.data import Example
from draftwise.distill.rundir import RunDir, read_json
from draftwise.files import atomic_path

SHARD = 8


@dataclass
class Scores:
    """The target's top-k per position of one sequence: idx [L, k], logp [L, k], rest [L]."""

    idx: np.ndarray
    logp: np.ndarray
    rest: np.ndarray


def top_k(logits: np.ndarray, k: int) -> Scores:
    """logits [L, V] -> the k most likely tokens' ids and log-probabilities (descending), and
    the probability of everything else (summed over the other tokens: no 1 - sum). float32
    exponentials summed in float64: 4x faster than float64 throughout, the same to 1e-7."""
    x = np.asarray(logits, dtype=np.float32)
    k = min(k, x.shape[1])
    idx = np.argpartition(x, x.shape[1] - k, axis=1)[:, -k:]
    top = np.take_along_axis(x, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    idx, top = np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)
    m = top[:, :1]
    e = np.exp(x - m)
    total = e.sum(axis=1, dtype=np.float64)
    np.put_along_axis(e, idx, 0.0, axis=1)
    rest = e.sum(axis=1, dtype=np.float64) / total
    logp = top.astype(np.float64) - m - np.log(total)[:, None]
    return Scores(idx.astype(np.int32), logp.astype(np.float16), rest.astype(np.float32))


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
              progress=None) -> dict:
    """Write the missing shards (score: labels or target_scores), then score/done.json;
    returns done.json."""
    if run.is_done("score"):
        return read_json(run.done("score"))
    run.stage("score")
    n_shards = -(-len(examples) // SHARD)
    task = progress.add_task("score", total=len(examples), info="") if progress else None
    t0, n_pos = time.perf_counter(), 0
    for j in range(n_shards):
        chunk = examples[j * SHARD:(j + 1) * SHARD]
        path = shard_path(run, j)
        if not path.is_file():
            parts = []
            for e in chunk:
                parts.append(score(e))
                n_pos += len(e.cont)
                if progress:
                    dt = time.perf_counter() - t0
                    progress.update(task, advance=1, info=f"{n_pos / dt:.0f} positions/s")
            offsets = np.cumsum([0] + [len(s.rest) for s in parts])
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, idx=np.concatenate([s.idx for s in parts]),
                         logp=np.concatenate([s.logp for s in parts]),
                         rest=np.concatenate([s.rest for s in parts]), offsets=offsets,
                         seqs=np.array([e.seq for e in chunk], dtype=np.int64))
        elif progress:
            progress.update(task, advance=len(chunk))
    rest = np.concatenate([np.load(shard_path(run, j))["rest"] for j in range(n_shards)])
    k = int(np.load(shard_path(run, 0))["idx"].shape[1])
    info = {"n_positions": int(len(rest)), "top_k": k,
            "rest_mass_mean": float(rest.mean()), "rest_mass_p90": float(np.quantile(rest, 0.9))}
    run.mark_done("score", info)
    return info


def read_scores(run: RunDir, n_examples: int) -> dict[int, Scores]:
    """seq -> Scores, from every shard."""
    out = {}
    for j in range(-(-n_examples // SHARD)):
        z = np.load(shard_path(run, j))
        off = z["offsets"]
        for i, seq in enumerate(z["seqs"]):
            a, b = off[i], off[i + 1]
            out[int(seq)] = Scores(z["idx"][a:b], z["logp"][a:b], z["rest"][a:b])
    return out
