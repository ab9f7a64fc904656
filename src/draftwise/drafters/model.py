"""A draft language model sharing the target's token ids, with its own KV cache."""

from __future__ import annotations

import numpy as np

from draftwise.backends.base import Backend, Feed
from draftwise.config import SamplingConfig
from draftwise.drafters.base import Draft, DraftAsk, Drafter
from draftwise.drafters.lm import DraftLM
from draftwise.sampling import probs, sample


def top_prob(logits: np.ndarray) -> float:
    """max softmax(logits) for one row [V], without building the distribution."""
    return float(1.0 / np.exp(logits - logits.max()).sum())


class ModelDrafter(Drafter):
    """Drafts with a small LM sharing the target's token ids, one sequence per target sequence.

    Each sequence's cache keeps the drafted tokens of its last round; on the next `propose` it is
    cut back to the longest prefix the target committed and fed the rest (accepted + bonus
    tokens). Several sequences draft in lockstep: one draft decode per step carries one feed per
    sequence still drafting.
    """

    name = "model"
    replayable = True

    def __init__(self, backend: Backend, n_vocab_target: int | None = None, p_min: float = 0.0):
        self.lms = [DraftLM(backend, seq=s) for s in range(backend.n_seq)]
        self.n_vocab_target = n_vocab_target or backend.vocab.n_vocab
        self.p_min = p_min

    @property
    def lm(self) -> DraftLM:
        """Sequence 0 (single-sequence use)."""
        return self.lms[0]

    @property
    def n_seq(self) -> int:
        return len(self.lms)

    def model_backend(self) -> Backend:
        return self.lm.backend

    def reset(self) -> None:
        for lm in self.lms:
            lm.reset()

    def begin(self, ctx: list[int]) -> None:
        """Prefill all but the last context token (done while the target prefills)."""
        self.lm.prefill(ctx)

    def start(self, seq: int, ctx: list[int]) -> None:
        """Empty seq's cache: the prompt arrives in chunks (`prefill_many`) or with the first draft."""
        self.lms[seq].reset()

    def prefill_many(self, feeds: list[Feed]) -> None:
        if feeds:
            self.lm.backend.forward_many([self.lms[f.seq].extend(list(f.tokens)) for f in feeds])

    def _fit(self, q: np.ndarray) -> np.ndarray:
        """q [V_draft] -> [V_target]: padding rows differ in width only; they carry no mass."""
        V = self.n_vocab_target
        if q.shape[0] == V:
            return q
        out = np.zeros(V, dtype=q.dtype)
        n = min(V, q.shape[0])
        out[:n] = q[:n]
        return out / out.sum()

    def _choose(self, logits: np.ndarray, a: DraftAsk) -> tuple[int, np.ndarray | None] | None:
        """The drafted token after logits [V_draft] and its q [V_target] (None when greedy), or
        None when the draft is less sure than p_min."""
        if a.sampling.greedy:
            if self.p_min and top_prob(logits) < self.p_min:
                return None
            return int(np.argmax(logits[:self.n_vocab_target])), None
        q = self._fit(probs(logits[None], a.sampling)[0])
        if self.p_min and q.max() < self.p_min:
            return None
        return sample(q, a.rng), q

    def propose(self, ctx: list[int], k: int, sampling: SamplingConfig,
                rng: np.random.Generator) -> Draft:
        return self.propose_many([DraftAsk(0, ctx, k, sampling, rng)])[0]

    def propose_many(self, asks: list[DraftAsk]) -> list[Draft]:
        drafts = [Draft() for _ in asks]
        qs: list[list[np.ndarray]] = [[] for _ in asks]
        n_ctx = self.lm.backend.n_ctx
        ks = [min(a.k, n_ctx - len(a.ctx)) for a in asks]
        live = [i for i, k in enumerate(ks) if k > 0]
        feeds = [self.lms[asks[i].seq].catch_up(asks[i].ctx) for i in live]
        while live:  # one decode per draft step, one feed per sequence still drafting
            rows = self.lm.backend.forward_many(feeds)
            nxt, feeds = [], []
            for i, logits in zip(live, rows):
                got = self._choose(logits[-1], asks[i])
                if got is None:
                    continue
                drafts[i].tokens.append(got[0])
                if got[1] is not None:
                    qs[i].append(got[1])
                if len(drafts[i].tokens) < ks[i]:
                    nxt.append(i)
                    feeds.append(self.lms[asks[i].seq].push(got[0]))
            live = nxt
        for d, q in zip(drafts, qs):
            d.q = np.stack(q) if q else None
        return drafts
