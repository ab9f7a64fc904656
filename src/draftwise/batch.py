"""Generations decoding together on one engine: admission with chunked prefill, K per iteration,
one batched round per step (`Engine.rounds`)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from draftwise.backends.base import Feed
from draftwise.errors import DraftwiseError
from draftwise.policy.load import LoadAwareK

if TYPE_CHECKING:
    from draftwise.engine import Engine, Round, Run


class Batch:
    """Up to n_seq runs of one engine, stepped together.

    Each step feeds the prompt chunks of runs being admitted (at most `chunk` tokens in all, oldest
    run first; None: whole prompts) and one round of every prefilled run, in the same decodes, so
    a long prompt does not stall the runs already decoding. A run's K comes from its own policy;
    runs without one share the K that `load` picks for the iteration.
    """

    def __init__(self, engine: Engine, n_seq: int = 1, chunk: int | None = None,
                 load: LoadAwareK | None = None):
        if n_seq > engine.n_seq:
            raise DraftwiseError(f"{n_seq} sequences asked for, but the models hold "
                                 f"{engine.n_seq}; load them with n_seq >= {n_seq}")
        self.engine, self.chunk, self.load = engine, chunk, load
        self.runs: list[Run] = []
        self._free = list(range(n_seq))

    @property
    def free(self) -> int:
        """Runs that can still be added."""
        return len(self._free)

    def add(self, run: Run) -> None:
        """Admit a run: it gets a sequence, its caches are emptied; its prompt follows in chunks."""
        if run.policy is None and self.load is None:
            raise DraftwiseError("a run without a K policy needs a batch with load-aware K")
        t0 = time.perf_counter()
        run.seq = self._free.pop(0)
        self.engine.start(run.seq, run.ids)
        if run.policy is not None:
            run.policy.reset()
        self.runs.append(run)
        run.t_start = time.perf_counter()
        run.stats.t_prefill += run.t_start - t0

    def remove(self, run: Run) -> None:
        """Free a run's sequence (finished, or stopped mid-generation)."""
        self.runs.remove(run)
        self._free.append(run.seq)
        self._free.sort()

    def step(self) -> list[tuple[Run, Round]]:
        """One iteration; returns each decoding run with the round it committed."""
        t0 = time.perf_counter()
        decoding = [r for r in self.runs if r.prefilled and not r.done]
        prefill, filling, left = [], [], self.chunk or sys.maxsize
        for run in self.runs:
            if run.prefilled or left <= 0:
                continue
            n = min(len(run.ids) - 1 - run.n_fed, left)
            prefill.append(Feed(run.seq, run.ids[run.n_fed:run.n_fed + n], 0))
            run.n_fed += n
            left -= n
            filling.append(run)
        n_prefill = sum(len(f.tokens) for f in prefill)
        asks = [run.ask(k) for run, k in zip(decoding, self._ks(decoding, n_prefill))]
        rounds = self.engine.rounds(asks, prefill)
        now = time.perf_counter()
        for run in filling:
            run.stats.t_prefill += now - t0
            if run.prefilled:
                run.t_start = now
        for run, r in zip(decoding, rounds):
            run.commit(r)
        if self.load is not None and rounds:
            self.load.observe([(r.k, r.n_accepted) for r in rounds],
                              n_prefill + sum(r.k + 1 for r in rounds),
                              rounds[0].t_draft, rounds[0].t_target)
        return list(zip(decoding, rounds))

    def _ks(self, runs: list[Run], n_prefill: int) -> list[int]:
        """K per run: its policy's, else the load-aware K shared by the runs without one."""
        if self.engine.drafter is None:
            return [0] * len(runs)
        ks = [run.policy.next_k() if run.policy is not None else -1 for run in runs]
        shared = [run for run, k in zip(runs, ks) if k < 0]
        if shared:
            assert self.load is not None
            k = self.load.choose([self.load.alpha(run.stats) for run in shared],
                                 n_prefill + sum(k + 1 for k in ks if k >= 0))
            ks = [k if kk < 0 else kk for kk in ks]
        return ks
