"""The speculative decoding loop: draft K, verify K+1 in one target forward, commit, roll back.

Both caches follow one rule: they hold every committed token except the last one (`cur`). A round
feeds the target [cur, d_1..d_K] and gets K+1 rows of logits: row i judges d_{i+1}, row K gives the
bonus token. After n accepted tokens the target keeps cur + d_1..d_n and the new cur is the
target's own token. With no drafter (K = 0) the same round is plain autoregressive decoding.

`Engine.round` is one round as a function; `Engine.run` strings rounds into a generation (`Run`),
whose stats, tokens and margins belong to it, not to the engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from draftwise.acceptance import EXACT, Acceptance
from draftwise.backends.base import Backend
from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.drafters.base import Draft, Drafter
from draftwise.errors import DraftwiseError
from draftwise.policy import KPolicy, make_policy
from draftwise.stats import Stats
from draftwise.text import Detokenizer, StopMatcher
from draftwise.verifier import verify

log = logging.getLogger("draftwise")


@dataclass(frozen=True)
class Round:
    """What one round did. tokens: committed [<= k + 1], cut at EOS and at the budget; margins:
    the target's top-2 logit margin at each verified position up to the commit [n_accepted + 1]
    (empty unless traced); times in seconds of draft and target forwards."""

    k: int
    n_accepted: int
    tokens: list[int]
    eos: bool
    t_draft: float
    t_target: float
    margins: list[float] = field(default_factory=list)
    n_lenient: int = 0  # of n_accepted, kept only by a lenient acceptance mode


@dataclass
class Generation:
    """One finished generation. margins [len(tokens)]: the target's top-2 logit margin where each
    token was chosen (only when traced, for locating near-ties)."""

    text: str
    tokens: list[int]
    stats: Stats
    margins: list[float] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """False when a lenient (lossy) acceptance mode verified it."""
        return self.stats.exact


class Engine:
    """A target with an optional drafter and a default K policy. One generation at a time
    (the caches are stateful); `policy` persists across generations (adaptive K learns costs)."""

    def __init__(self, target: Backend, drafter: Drafter | None = None,
                 spec: SpecConfig | None = None, policy: KPolicy | None = None):
        self.target = target
        self.drafter = drafter
        self.spec = spec or SpecConfig()
        self.policy = policy or make_policy(self.spec)

    def prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        ids = self.target.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise DraftwiseError("the prompt is empty and the model adds no BOS token; give a prompt")
        if len(ids) >= self.target.n_ctx:
            raise DraftwiseError(
                f"the prompt has {len(ids)} tokens but the context holds {self.target.n_ctx}; "
                "shorten the prompt or raise --ctx")
        return ids

    def prefill(self, ids: list[int]) -> float:
        """Both caches take ids[:-1] (ids[-1] is `cur`); returns the seconds it took."""
        t0 = time.perf_counter()
        self.target.rollback(0)
        if len(ids) > 1:
            self.target.forward(ids[:-1], 0)
        if self.drafter is not None:
            self.drafter.begin(ids)
        return time.perf_counter() - t0

    def round(self, ctx: list[int], k: int, sampling: SamplingConfig, rng: np.random.Generator,
              budget: int, trace: bool = False, accept: Acceptance = EXACT) -> Round:
        """One round after ctx (committed ids, cur last) with up to k drafts and at most `budget`
        new tokens, verified by `accept`; the caller appends Round.tokens to ctx."""
        tgt, drafter = self.target, self.drafter
        fd0, ft0 = (drafter.forward_seconds if drafter else 0.0), tgt.forward_seconds
        # 1. draft up to k tokens (a drafter may return fewer)
        draft = drafter.propose(ctx, k, sampling, rng) if drafter is not None and k > 0 else Draft()
        k = len(draft.tokens)
        # 2. verify: one target forward over [cur, d_1..d_k] gives k + 1 rows of logits
        n_past = tgt.n_past
        logits = tgt.forward([ctx[-1], *draft.tokens], k + 1)
        # 3. accept the longest agreeing prefix, then one token of the target's own
        verdict = verify(draft.tokens, draft.q, logits, sampling, rng, accept)
        n_acc = verdict.n_accepted
        margins: list[float] = []
        if trace:
            top2 = np.partition(logits[:n_acc + 1], -2, axis=-1)[:, -2:]
            margins = (top2[:, 1] - top2[:, 0]).tolist()
        # 4. roll the target back to cur + the accepted drafts (the draft catches up next round)
        tgt.rollback(n_past + 1 + n_acc)
        if drafter is not None:
            drafter.feedback(k, n_acc)
        # 5. commit, cut at EOS and at the budget
        new = [*draft.tokens[:n_acc], verdict.token][:budget]
        eos_at = next((i for i, t in enumerate(new) if t in tgt.vocab.eos_ids), None)
        if eos_at is not None:
            new = new[:eos_at]
        t_draft = (drafter.forward_seconds - fd0) if drafter is not None else 0.0
        return Round(k, n_acc, new, eos_at is not None, t_draft, tgt.forward_seconds - ft0,
                     margins[:len(new)], verdict.n_lenient)

    def run(self, prompt: str | Sequence[int], cfg: GenerateConfig, policy: KPolicy | None = None,
            trace_margins: bool = False, accept: Acceptance | None = None) -> Run:
        """A generation, started when first iterated. policy: this generation's K policy (default:
        the engine's); trace_margins: keep the target's top-2 logit margin per token; accept: this
        generation's acceptance mode (default: the engine's spec.rule)."""
        accept = accept or self.spec.rule
        accept.check(cfg.sampling.greedy)
        return Run(self, self.prompt_ids(prompt), cfg, policy or self.policy, trace_margins,
                   accept if self.drafter is not None else EXACT)

    def generate(self, prompt: str | Sequence[int], cfg: GenerateConfig,
                 policy: KPolicy | None = None, trace_margins: bool = False,
                 accept: Acceptance | None = None) -> Generation:
        run = self.run(prompt, cfg, policy, trace_margins, accept)
        for _ in run:
            pass
        return run.result()


class Run:
    """One generation in progress. Iterate it for text deltas (or `rounds()` for the rounds);
    `stats` is live meanwhile; `result()` gives the Generation so far."""

    def __init__(self, engine: Engine, ids: list[int], cfg: GenerateConfig, policy: KPolicy,
                 trace: bool, accept: Acceptance = EXACT):
        self.engine, self.ids, self.cfg, self.policy, self.trace = engine, ids, cfg, policy, trace
        self.accept = accept
        self.stats = Stats(n_prompt=len(ids), accept=accept.name)
        self.tokens: list[int] = []
        self.margins: list[float] = []
        self._text: list[str] = []

    def rounds(self) -> Iterator[Round]:
        """Prefill, then rounds until EOS, max_tokens or the context limit."""
        eng, cfg, st = self.engine, self.cfg, self.stats
        tgt, speculating = eng.target, eng.drafter is not None
        rng = np.random.default_rng(cfg.sampling.seed)
        ctx = list(self.ids)
        st.t_prefill = eng.prefill(ctx)
        self.policy.reset()
        t_start = time.perf_counter()
        while True:
            budget = cfg.max_tokens - st.n_generated
            room = tgt.n_ctx - tgt.n_past - 1  # positions left after cur
            if budget <= 0 or room <= 0:
                st.finish_reason = "length"
                break
            k = min(self.policy.next_k(), budget - 1, room - 1) if speculating else 0
            r = eng.round(ctx, k, cfg.sampling, rng, budget, self.trace, self.accept)
            st.t_draft += r.t_draft
            st.t_target += r.t_target
            if speculating:
                self.policy.observe(r.k, r.n_accepted, r.t_draft, r.t_target)
            ctx.extend(r.tokens)
            self.tokens.extend(r.tokens)
            self.margins.extend(r.margins)
            if st.record_round(r.k, r.n_accepted, len(r.tokens), r.n_lenient):
                log.warning("acceptance fell below 0.5 over the last rounds: the draft diverges "
                            "from the target; speculation may not pay for this prompt")
            st.t_decode = time.perf_counter() - t_start
            yield r
            if r.eos:
                st.finish_reason = "stop"
                break
        st.t_decode = time.perf_counter() - t_start

    def __iter__(self) -> Iterator[str]:
        """Text deltas; stops at EOS, a stop string, max_tokens or the context limit."""
        detok = Detokenizer(self.engine.target.detokenize, self.ids)
        stop = StopMatcher(self.cfg.stop)
        rounds = self.rounds()
        for r in rounds:
            out, hit = stop.push(detok.add(r.tokens))
            if out:
                self._text.append(out)
                yield out
            if hit:
                rounds.close()
                self.stats.finish_reason = "stop"
                return
        out, _ = stop.push(detok.flush())
        out += stop.flush()
        if out:
            self._text.append(out)
            yield out

    def result(self) -> Generation:
        return Generation("".join(self._text), list(self.tokens), self.stats, list(self.margins))
