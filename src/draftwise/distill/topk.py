"""The target's distribution kept compactly: per position the top-k tokens' ids and
log-probabilities plus the mass of all other tokens.

A full row is as wide as the vocabulary (152k floats for Qwen); top-32 with the rest's mass is
32 x (int32 + float16) + float32 = 196 bytes per position. A file of several sequences'
Scores (score/shard-NNNNN.npz, gen/scores.npz) holds idx int32 [N, k], logp float16 [N, k],
rest float32 [N], offsets int64 [n + 1] into the rows and seqs int64 [n] (their keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from draftwise.files import atomic_path


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


def concat(parts: Sequence[Scores]) -> Scores:
    """Scores of consecutive positions, one after the other."""
    return Scores(*(np.concatenate([getattr(s, f) for s in parts])
                    for f in ("idx", "logp", "rest")))


def save_scores(path: Path, scores: dict[int, Scores]) -> None:
    """Write key -> Scores as one .npz (atomically)."""
    parts = list(scores.values())
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **vars(concat(parts)), offsets=np.cumsum([0] + [len(s.rest) for s in parts]),
                 seqs=np.array(list(scores), dtype=np.int64))


def load_scores(path: Path) -> dict[int, Scores]:
    """key -> Scores of a file save_scores wrote."""
    z = np.load(path)
    idx, logp, rest, off = z["idx"], z["logp"], z["rest"], z["offsets"]
    return {int(seq): Scores(idx[a:b], logp[a:b], rest[a:b])
            for seq, a, b in zip(z["seqs"], off[:-1], off[1:])}
