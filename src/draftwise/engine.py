"""The speculative decoding loop: draft K, verify K+1 in one target forward, commit, roll back.

Both caches follow one rule: they hold every committed token except the last one (`cur`). A round
feeds the target [cur, d_1..d_K] and gets K+1 rows of logits: row i judges d_{i+1}, row K gives the
bonus token. After n accepted tokens the target keeps cur + d_1..d_n and the new cur is the
target's own token. With no drafter (K = 0) the same round is plain autoregressive decoding.

`Engine.rounds` is one batched round over several sequences (each its own cache sequence):
drafts in lockstep, one target decode verifying all of them (and carrying prompt chunks of
sequences being admitted), per-sequence verification and rollback. `Engine.round` is its
one-sequence case. A `Run` is one generation; a `Batch` steps runs together (admission with
chunked prefill, K per iteration), and a lone `Run` iterates a batch of one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from draftwise.acceptance import EXACT, Acceptance
from draftwise.backends.base import Backend, Feed
from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.drafters.base import Draft, DraftAsk, Drafter
from draftwise.errors import DraftwiseError
from draftwise.policy import KPolicy, make_policy
from draftwise.policy.load import LoadAwareK
from draftwise.stats import Stats
from draftwise.text import Detokenizer, StopMatcher
from draftwise.verifier import verify

log = logging.getLogger("draftwise")
# Prompts that share one Batch step at most this many tokens in all: below it a step costs
# about its fixed part (the weights read once), above it each prompt token adds its own time.
PACK = 16


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


@dataclass(frozen=True)
class RoundAsk:
    """One sequence's part of a round: up to k drafts after ctx (committed ids, cur last), at most
    `budget` new tokens, verified by `accept`; rng draws this sequence's samples. lookup_only:
    only drafts that need no draft-model forward (an n-gram lookup): the draft model has not
    seen this prompt yet (its first round)."""

    seq: int
    ctx: list[int]
    k: int
    sampling: SamplingConfig
    rng: np.random.Generator
    budget: int
    trace: bool = False
    accept: Acceptance = EXACT
    lookup_only: bool = False


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
    """A target with an optional drafter and a default K policy. Its caches hold `n_seq`
    sequences; `policy` persists across generations (adaptive K learns costs)."""

    def __init__(self, target: Backend, drafter: Drafter | None = None,
                 spec: SpecConfig | None = None, policy: KPolicy | None = None):
        self.target = target
        self.drafter = drafter
        self.spec = spec or SpecConfig()
        self.policy = policy or make_policy(self.spec)

    @property
    def n_seq(self) -> int:
        """Sequences the target and the drafter both keep apart."""
        return min(self.target.n_seq, self.drafter.n_seq if self.drafter else self.target.n_seq)

    def prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        ids = self.target.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise DraftwiseError("the prompt is empty and the model adds no BOS token; give a prompt")
        if len(ids) >= self.target.n_ctx:
            raise DraftwiseError(
                f"the prompt has {len(ids)} tokens but the context holds {self.target.n_ctx}; "
                "shorten the prompt or raise --ctx")
        return ids

    def start(self, seq: int, ids: list[int]) -> None:
        """Sequence seq starts a generation from ids: its caches are emptied (the prompt follows
        in chunks, see `rounds`)."""
        self.target.rollback_seq(seq, 0)
        if self.drafter is not None:
            self.drafter.start(seq, ids)

    def rounds(self, asks: Sequence[RoundAsk], prefill: Sequence[Feed] = (),
               draft_prefill: Sequence[Feed] | None = None) -> list[Round]:
        """One round for each ask (distinct sequences); `prefill`: prompt chunks (no logits, one
        per sequence) for the target, in the same decode. A sequence may have both: its prompt's
        rest, then its first round (k = 0: the target's own first token). draft_prefill: the
        drafter's prompt chunks (default: the same; a Batch feeds the draft once no prompt is
        fed, off the first token's path). The caller appends each Round.tokens to its ctx."""
        tgt, drafter = self.target, self.drafter
        if drafter is not None:
            drafter.prefill_many(list(prefill if draft_prefill is None else draft_prefill))
        fd0, ft0 = (drafter.forward_seconds if drafter else 0.0), tgt.forward_seconds
        # 1. draft up to k tokens per sequence, in lockstep (a drafter may return fewer)
        drafts = [Draft() for _ in asks]
        if drafter is not None:
            spec = [i for i, a in enumerate(asks) if a.k > 0 and not a.lookup_only]
            got = drafter.propose_many([DraftAsk(asks[i].seq, asks[i].ctx, asks[i].k,
                                                 asks[i].sampling, asks[i].rng) for i in spec])
            for i, d in zip(spec, got):
                drafts[i] = d
            for i in [i for i, a in enumerate(asks) if a.k > 0 and a.lookup_only]:
                drafts[i] = Draft(drafter.lookup(asks[i].ctx, asks[i].k) or [])
        t_draft = (drafter.forward_seconds - fd0) if drafter is not None else 0.0
        # 2. verify: one target decode over every [cur, d_1..d_k] gives k + 1 rows each (after
        # the prompt's rest where a sequence finishes its prefill: one feed per sequence)
        asked = {a.seq for a in asks}
        lead = {f.seq: list(f.tokens) for f in prefill if f.seq in asked}
        alone = [f for f in prefill if f.seq not in lead]
        n_past = [tgt.seq_past(a.seq) + len(lead.get(a.seq, ())) for a in asks]
        feeds = [*alone, *(Feed(a.seq, [*lead.get(a.seq, ()), a.ctx[-1], *d.tokens],
                                len(d.tokens) + 1) for a, d in zip(asks, drafts))]
        rows = tgt.forward_many(feeds)[len(alone):] if feeds else []
        t_target = tgt.forward_seconds - ft0
        return [self._settle(a, d, logits, n0, t_draft, t_target)
                for a, d, logits, n0 in zip(asks, drafts, rows, n_past)]

    def _settle(self, a: RoundAsk, draft: Draft, logits: np.ndarray, n_past: int, t_draft: float,
                t_target: float) -> Round:
        """Verify one sequence's draft against its logits [k + 1, V], roll back its rejected
        suffix, commit."""
        tgt, k = self.target, len(draft.tokens)
        # 3. accept the longest agreeing prefix, then one token of the target's own
        verdict = verify(draft.tokens, draft.q, logits, a.sampling, a.rng, a.accept)
        n_acc = verdict.n_accepted
        margins: list[float] = []
        if a.trace:
            top2 = np.partition(logits[:n_acc + 1], -2, axis=-1)[:, -2:]
            margins = (top2[:, 1] - top2[:, 0]).tolist()
        # 4. roll the target back to cur + the accepted drafts (the draft catches up next round)
        tgt.rollback_seq(a.seq, n_past + 1 + n_acc)
        if self.drafter is not None:
            self.drafter.feedback_at(a.seq, k, n_acc)
        # 5. commit, cut at EOS and at the budget
        new = [*draft.tokens[:n_acc], verdict.token][:a.budget]
        eos_at = next((i for i, t in enumerate(new) if t in tgt.vocab.eos_ids), None)
        if eos_at is not None:
            new = new[:eos_at]
        return Round(k, n_acc, new, eos_at is not None, t_draft, t_target, margins[:len(new)],
                     verdict.n_lenient)

    def round(self, ctx: list[int], k: int, sampling: SamplingConfig, rng: np.random.Generator,
              budget: int, trace: bool = False, accept: Acceptance = EXACT) -> Round:
        """One round of sequence 0 (`rounds` with one ask)."""
        return self.rounds([RoundAsk(0, ctx, k, sampling, rng, budget, trace, accept)])[0]

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
    """One generation. Iterate it for text deltas (or `rounds()` for the rounds); `stats` is live
    meanwhile; `result()` gives the Generation so far.

    A Batch drives it: `add` gives it a sequence, prompt chunks advance `n_fed`, then per round
    `ask` and `commit`; `push` / `flush` turn rounds into text. policy: its own K policy, or None
    when the batch chooses K (load-aware); accept: its acceptance mode.
    """

    def __init__(self, engine: Engine, ids: list[int], cfg: GenerateConfig,
                 policy: KPolicy | None, trace: bool = False, accept: Acceptance = EXACT):
        self.engine, self.ids, self.cfg, self.policy, self.trace = engine, ids, cfg, policy, trace
        self.accept = accept
        self.stats = Stats(n_prompt=len(ids), accept=accept.name)
        self.tokens: list[int] = []
        self.margins: list[float] = []
        self.ctx = list(ids)
        self.rng = np.random.default_rng(cfg.sampling.seed)
        self.seq = -1  # the cache sequence, while in a batch
        self.n_fed = 0  # prompt ids the target's cache holds (all but the last when prefilled)
        self.n_fed_dft = 0  # prompt ids fed to the drafter (behind n_fed while prompts are fed)
        self.t_start = 0.0  # when decoding began
        self._text: list[str] = []
        self._stopped = False  # a stop string ended it: nothing is flushed
        self._detok = Detokenizer(engine.target.detokenize, ids)
        self._stop = StopMatcher(cfg.stop)

    @property
    def prefilled(self) -> bool:
        return self.n_fed >= len(self.ids) - 1

    @property
    def done(self) -> bool:
        return bool(self.stats.finish_reason)

    def ask(self, k: int, lookup_only: bool = False) -> RoundAsk:
        """This run's part of the next round with up to k drafts (cut to the budget and room)."""
        budget = self.cfg.max_tokens - self.stats.n_generated
        room = self.engine.target.n_ctx - self.engine.target.seq_past(self.seq) - 1
        k = max(0, min(k, budget - 1, room - 1)) if self.engine.drafter is not None else 0
        return RoundAsk(self.seq, self.ctx, k, self.cfg.sampling, self.rng, budget, self.trace,
                        self.accept, lookup_only)

    def commit(self, r: Round) -> None:
        """Take one round's tokens; finish at EOS, max_tokens or the context limit."""
        st = self.stats
        if self.tokens:  # the first round came with the prompt: its time is in t_prefill
            st.t_draft += r.t_draft
            st.t_target += r.t_target
            if self.policy is not None and self.engine.drafter is not None:
                self.policy.observe(r.k, r.n_accepted, r.t_draft, r.t_target)
        self.ctx.extend(r.tokens)
        self.tokens.extend(r.tokens)
        self.margins.extend(r.margins)
        if st.record_round(r.k, r.n_accepted, len(r.tokens), r.n_lenient):
            log.warning("acceptance fell below 0.5 over the last rounds: the draft diverges "
                        "from the target; speculation may not pay for this prompt")
        st.t_decode = time.perf_counter() - self.t_start
        room = self.engine.target.n_ctx - self.engine.target.seq_past(self.seq) - 1
        if r.eos:
            st.finish_reason = "stop"
        elif st.n_generated >= self.cfg.max_tokens or room <= 0:
            st.finish_reason = "length"

    def push(self, r: Round) -> str:
        """The text a committed round adds; a stop string ends the run (finish_reason stop)."""
        out, hit = self._stop.push(self._detok.add(r.tokens))
        if out:
            self._text.append(out)
        if hit:
            self.stats.finish_reason = "stop"
            self._stopped = True
            self._cut_at_stop()
        return out

    def _cut_at_stop(self) -> None:
        """Keep the tokens plain decoding would have made: up to the first one whose text
        completes the stop string. The later ones were verified in the same round, or decoded
        while an incomplete character held the text back; they are not part of the answer.
        Binary search: the stop string, once in the text, stays in every longer prefix."""
        decode, toks = self._detok.text_of, self.tokens
        if not self._stop.found(decode(toks)):
            return
        lo, hi = 0, len(toks)  # found in decode(toks[:hi]), not in toks[:lo]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self._stop.found(decode(toks[:mid])) else (mid, hi)
        self.stats.n_generated -= len(toks) - hi
        del toks[hi:]
        del self.margins[hi:]

    def flush(self) -> str:
        """The text held back at the end (partial characters, a possible stop string's start)."""
        if self._stopped:
            return ""
        out, _ = self._stop.push(self._detok.flush())
        out += self._stop.flush()
        if out:
            self._text.append(out)
        return out

    def rounds(self) -> Iterator[Round]:
        """Prefill, then rounds until EOS, max_tokens or the context limit (a batch of one)."""
        batch = Batch(self.engine)
        batch.add(self)
        try:
            while not self.done:
                for _, r in batch.step():
                    yield r
        finally:
            batch.remove(self)

    def __iter__(self) -> Iterator[str]:
        """Text deltas; stops at EOS, a stop string, max_tokens or the context limit."""
        rounds = self.rounds()
        for r in rounds:
            out = self.push(r)
            if out:
                yield out
            if self.done:
                rounds.close()
                break
        if out := self.flush():
            yield out

    def result(self) -> Generation:
        return Generation("".join(self._text), list(self.tokens), self.stats, list(self.margins))


class Batch:
    """Up to n_seq runs of one engine, stepped together.

    Each step feeds the target the prompt of the oldest run being admitted, at most `chunk`
    tokens (None: no limit; a longer prompt continues in the next steps). It finishes one prompt
    at most, unless the prompts together are at most PACK tokens: prefill is compute-bound here,
    so a prompt sharing a step would delay the other's first token by its own prefill time and
    save only one step's fixed cost. A run whose prompt is finished decodes its first token in
    that same step (the target's own, after what a lookup drafts for free: no draft model runs
    for it yet). While prompts are fed, the other runs decode one token each (k = 0): drafted
    rows would cost as much as prompt rows and delay the newcomer's first token. So the drafter
    needs a prompt only once no prompt is being fed: it gets every prompt it lacks then, in the
    step of the run's first draft, off every first token's path. Otherwise a run's K comes from
    its own policy; runs without one share the K that `load` picks for the step.
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
        prefill, filling, fed, budget = [], [], 0, self.chunk or sys.maxsize
        for run in self.runs:
            if run.prefilled:
                continue
            rest = len(run.ids) - 1 - run.n_fed
            if filling and fed + rest > min(budget, PACK):  # a second prompt only if all fit
                break
            n = min(rest, budget - fed)
            prefill.append(Feed(run.seq, run.ids[run.n_fed:run.n_fed + n], 0))
            run.n_fed += n
            fed += n
            filling.append(run)
        lagging = [] if prefill else [r for r in self.runs if r.n_fed_dft < r.n_fed]
        draft_prefill = [Feed(r.seq, r.ids[r.n_fed_dft:r.n_fed], 0) for r in lagging]
        for r in lagging:
            r.n_fed_dft = r.n_fed
        ready = [run for run in filling if run.prefilled]
        asks = [run.ask(k) for run, k in
                zip(decoding, [0] * len(decoding) if prefill else self._ks(decoding))]
        asks += [run.ask(k, lookup_only=True) for run, k in zip(ready, self._ks(ready))]
        decoding += ready
        rounds = self.engine.rounds(asks, prefill, draft_prefill)
        now = time.perf_counter()
        for run in filling:
            run.stats.t_prefill += now - t0
            if run.prefilled:
                run.t_start = now
        for run, r in zip(decoding, rounds):
            run.commit(r)
        if self.load is not None and rounds:
            self.load.observe([(r.k, r.n_accepted) for r in rounds],
                              sum(len(f.tokens) for f in prefill) + sum(r.k + 1 for r in rounds),
                              rounds[0].t_draft, rounds[0].t_target)
        return list(zip(decoding, rounds))

    def _ks(self, runs: list[Run]) -> list[int]:
        """K per run: its policy's, else the load-aware K shared by the runs without one."""
        if self.engine.drafter is None:
            return [0] * len(runs)
        ks = [run.policy.next_k() if run.policy is not None else -1 for run in runs]
        shared = [run for run, k in zip(runs, ks) if k < 0]
        if shared:
            assert self.load is not None
            k = self.load.choose([self.load.alpha(run.stats) for run in shared],
                                 sum(k + 1 for k in ks if k >= 0))
            ks = [k if kk < 0 else kk for kk in ks]
        return ks
