"""The speculative decoding loop: draft K, verify K+1 in one target forward, commit, roll back.

Both caches follow one rule: they hold every committed token except the last one (`cur`). A round
feeds the target [cur, d_1..d_K] and gets K+1 rows of logits: row i judges d_{i+1}, row K gives the
bonus token. After n accepted tokens the target keeps cur + d_1..d_n and the new cur is the
target's own token. With no drafter (K = 0) the same loop is plain autoregressive decoding.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from draftwise.backends.base import Backend
from draftwise.config import GenerateConfig, SpecConfig
from draftwise.controller import FixedK, KPolicy
from draftwise.drafters.base import Draft, Drafter
from draftwise.errors import DraftwiseError
from draftwise.sampling import probs
from draftwise.stats import Stats
from draftwise.text import StopMatcher, Detokenizer
from draftwise.verifier import verify_greedy, verify_sampling

log = logging.getLogger("draftwise")


@dataclass
class Generation:
    """The result of one generation."""

    text: str
    tokens: list[int]
    stats: Stats = field(default_factory=Stats)


class Engine:
    """Runs a target with an optional drafter. One generation at a time (caches are stateful)."""

    def __init__(self, target: Backend, drafter: Drafter | None = None,
                 spec: SpecConfig | None = None, policy: KPolicy | None = None):
        self.target = target
        self.drafter = drafter
        self.spec = spec or SpecConfig()
        self.policy = policy or FixedK(self.spec.k)
        self.stats = Stats()
        self.tokens: list[int] = []
        # When set, the target's top-2 logit margin of every committed token is kept in
        # self.margins (for locating near-ties where batched and one-token logits may disagree).
        self.trace_margins = False
        self.margins: list[float] = []
        self.cost_file: Path | None = None  # where the loader keeps an adaptive policy's costs

    def prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        ids = self.target.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise DraftwiseError("the prompt is empty and the model adds no BOS token; give a prompt")
        if len(ids) >= self.target.n_ctx:
            raise DraftwiseError(
                f"the prompt has {len(ids)} tokens but the context holds {self.target.n_ctx}; "
                "shorten the prompt or raise --ctx")
        return ids

    def stream_tokens(self, prompt_ids: list[int], cfg: GenerateConfig) -> Iterator[list[int]]:
        """Yield the tokens committed by each round. `self.stats` is live while this runs."""
        tgt, drafter, s = self.target, self.drafter, cfg.sampling
        rng = np.random.default_rng(s.seed)
        st = self.stats = Stats(n_prompt=len(prompt_ids))
        self.tokens = []
        self.margins = []
        eos = tgt.vocab.eos_ids
        ctx = list(prompt_ids)

        t0 = time.perf_counter()
        tgt.rollback(0)
        if len(ctx) > 1:
            tgt.forward(ctx[:-1], 0)
        if drafter is not None:
            drafter.reset()
            begin = getattr(drafter, "begin", None)
            if begin:
                begin(ctx)
        st.t_prefill = time.perf_counter() - t0
        self.policy.reset()

        t_start = time.perf_counter()
        while True:
            budget = cfg.max_tokens - st.n_generated
            room = tgt.n_ctx - tgt.n_past - 1  # positions left after cur
            if budget <= 0 or room <= 0:
                st.finish_reason = "length"
                break
            k = min(self.policy.next_k(), budget - 1, room - 1) if drafter is not None else 0
            fd0, ft0 = (drafter.forward_seconds if drafter else 0.0), tgt.forward_seconds
            draft = drafter.propose(ctx, k, s, rng) if k > 0 else Draft()
            k = len(draft.tokens)
            n_past = tgt.n_past
            logits = tgt.forward([ctx[-1], *draft.tokens], k + 1)
            if s.greedy:
                verdict = verify_greedy(draft.tokens, logits)
            else:
                verdict = verify_sampling(draft.tokens, draft.q, probs(logits, s), rng)
            n_acc = verdict.n_accepted
            if self.trace_margins:
                top2 = np.partition(logits[:n_acc + 1], -2, axis=-1)[:, -2:]
                self.margins.extend((top2[:, 1] - top2[:, 0]).tolist())
            tgt.rollback(n_past + 1 + n_acc)
            new = [*draft.tokens[:n_acc], verdict.token]
            dt_draft = (drafter.forward_seconds - fd0) if drafter else 0.0
            dt_target = tgt.forward_seconds - ft0
            st.t_draft += dt_draft
            st.t_target += dt_target
            if drafter is not None:
                drafter.feedback(k, n_acc)
                self.policy.observe(k, n_acc, dt_draft, dt_target)

            new = new[:budget]
            hit_eos = next((i for i, t in enumerate(new) if t in eos), None)
            if hit_eos is not None:
                new = new[:hit_eos]
            ctx.extend(new)
            self.tokens.extend(new)
            if st.record_round(k, n_acc, len(new)):
                log.warning("acceptance fell below 0.5 over the last rounds: the draft diverges "
                            "from the target; speculation may not pay for this prompt")
            st.t_decode = time.perf_counter() - t_start
            if new:
                yield new
            if hit_eos is not None:
                st.finish_reason = "stop"
                break
        st.t_decode = time.perf_counter() - t_start

    def stream(self, prompt: str | Sequence[int], cfg: GenerateConfig) -> Iterator[str]:
        """Yield text deltas; stops at EOS, a stop string, max_tokens or the context limit."""
        ids = self.prompt_ids(prompt)
        detok = Detokenizer(self.target.detokenize, ids)
        stop = StopMatcher(cfg.stop)
        for new in self.stream_tokens(ids, cfg):
            out, hit = stop.push(detok.add(new))
            if out:
                yield out
            if hit:
                self.stats.finish_reason = "stop"
                return
        out, _ = stop.push(detok.flush())
        out += stop.flush()
        if out:
            yield out

    def generate(self, prompt: str | Sequence[int], cfg: GenerateConfig) -> Generation:
        text = "".join(self.stream(prompt, cfg))
        return Generation(text=text, tokens=list(self.tokens), stats=self.stats)
