"""`advise`: predict speedup per K from one teacher-forced pass and a cost micro-benchmark.

1. The target greedily continues a few prompts (its own text is what it will verify).
2. One forward of each draft (and, when sampling, of the target) over prompt + continuation gives
   the acceptance at every position: argmax agreement (greedy) or sum(min(p, q)) (sampling).
3. A micro-benchmark times the target's forward over n = 1..k_max+1 tokens, the verification
   arithmetic on n rows, and one draft step.
4. Rounds are replayed along each continuation: a round at position j with K drafts keeps the
   accepted prefix and one target token, exactly as the engine does (for greedy decoding the
   replay is exact: an accepted draft token is the target's token, so the teacher-forced context
   is the real one). Predicted speedup = tokens x t_ar / sum over rounds of
   (draft steps x t_step + t_verify(k + 1) + t_check(k + 1)). With a constant acceptance alpha
   this reduces to Leviathan et al. 2023: E[tokens] = (1 - alpha^(K+1)) / (1 - alpha), reported
   alongside as the i.i.d. estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from draftwise.backends.base import Backend
from draftwise.config import GenerateConfig, SamplingConfig
from draftwise.drafters.base import Drafter
from draftwise.engine import Engine
from draftwise.policy.expected import expected_tokens
from draftwise.sampling import probs
from draftwise.verifier import verify_greedy, verify_sampling

# -- arithmetic --------------------------------------------------------------------------------


def iid_speedup(alpha: float, k: int, t_ar: float, t_step: float, t_verify: float,
                t_check: float = 0.0) -> float:
    """E[tokens | alpha, K] x t_ar / (K t_step + t_verify(K+1) + t_check(K+1)); K = 0 gives
    t_ar / (t_verify(1) + t_check(1))."""
    return expected_tokens(alpha, k) * t_ar / (k * t_step + t_verify + t_check)


@dataclass
class Replay:
    """Totals of replayed rounds; verified[k] counts rounds that drafted k tokens."""

    tokens: int = 0
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    steps: int = 0  # draft model forward steps
    verified: list[int] = field(default_factory=list)

    def add(self, other: Replay) -> None:
        self.tokens += other.tokens
        self.rounds += other.rounds
        self.drafted += other.drafted
        self.accepted += other.accepted
        self.steps += other.steps
        self.verified = [a + b for a, b in zip(_pad(self.verified, other.verified),
                                               _pad(other.verified, self.verified))]

    @property
    def tau(self) -> float:
        return self.tokens / self.rounds if self.rounds else 0.0

    def seconds(self, t_step: float, t_verify: Sequence[float], t_check: Sequence[float]) -> float:
        """Predicted decode time; t_verify[n-1] / t_check[n-1] cost a forward / check of n rows."""
        return self.steps * t_step + sum(c * (t_verify[k] + t_check[k])
                                         for k, c in enumerate(self.verified))


def _pad(a: list[int], b: list[int]) -> list[int]:
    return a + [0] * (len(b) - len(a))


Propose = Callable[[int, int], tuple[Sequence[float], int]]
"""propose(j, k) -> (acceptance probability of each drafted token [<=k], draft model steps)."""


def replay(length: int, propose: Propose, k: int, rng: np.random.Generator | None = None,
           feedback: Callable[[int, int], None] | None = None) -> Replay:
    """Replay rounds over `length` target tokens with up to k drafts per round.

    A drafted token is accepted with its probability (0/1 for greedy: no randomness used); the
    round ends at the first rejection and commits the accepted tokens plus one target token.
    """
    out = Replay(verified=[0] * (k + 1))
    j = 0
    while j < length:
        kk = min(k, length - j - 1)  # the engine drafts at most budget - 1
        betas, steps = propose(j, kk) if kk > 0 else ((), 0)
        n = 0
        for b in betas:
            if b >= 1.0 or (b > 0.0 and rng is not None and rng.random() < b):
                n += 1
            else:
                break
        out.tokens += min(n + 1, length - j)
        out.rounds += 1
        out.drafted += len(betas)
        out.accepted += n
        out.steps += steps
        out.verified[len(betas)] += 1
        if feedback:
            feedback(len(betas), n)
        j += n + 1
    return out


# -- teacher forcing ---------------------------------------------------------------------------


def continuation(target: Backend, prompt_ids: list[int], n_tokens: int) -> tuple[list[int], float]:
    """The target's greedy continuation [<= n_tokens] and its decode tok/s (autoregressive)."""
    gen = Engine(target).generate(prompt_ids, GenerateConfig(max_tokens=n_tokens))
    return gen.tokens, gen.stats.tok_s


def teacher_forced(backend: Backend, prompt_ids: list[int], cont: list[int],
                   chunk: int = 64, cached: bool = False) -> np.ndarray:
    """logits [L, V]: row j predicts cont[j] from prompt + cont[:j] (L = len(cont)).

    The prompt (all but its last token) stays in the backend's cache on return; cached=True
    says it is there from the previous call with the same prompt_ids, and skips recomputing it
    (several continuations of one prompt)."""
    n = len(prompt_ids) - 1
    backend.rollback(n if cached else 0)
    if n > 0 and not cached:
        backend.forward(prompt_ids[:-1], 0)
    seq = [prompt_ids[-1], *cont[:-1]]
    # copies: a backend may return a view of a buffer that its next forward overwrites
    rows = [np.array(backend.forward(seq[i:i + chunk], len(seq[i:i + chunk])))
            for i in range(0, len(seq), chunk)]
    backend.rollback(n)
    return np.concatenate(rows)


def greedy_agreement(draft_logits: np.ndarray, cont: Sequence[int], n_vocab: int) -> np.ndarray:
    """[L] 1.0 where the draft's argmax over the target's ids equals the target token."""
    return (np.argmax(draft_logits[:, :n_vocab], axis=1) == np.asarray(cont)).astype(float)


def overlap(target_logits: np.ndarray, draft_logits: np.ndarray, s: SamplingConfig,
            chunk: int = 16) -> np.ndarray:
    """[L] sum_v min(p, q): the probability that a sampled draft token is accepted."""
    n = min(target_logits.shape[1], draft_logits.shape[1])
    out = [np.minimum(probs(target_logits[i:i + chunk, :n], s),
                      probs(draft_logits[i:i + chunk, :n], s)).sum(axis=1)
           for i in range(0, len(target_logits), chunk)]
    return np.concatenate(out)


def token_probs(target_logits: np.ndarray, s: SamplingConfig) -> Callable[[int, int], float]:
    """p(row, token) under s (temperature only) without building [L, V] probabilities."""
    x = target_logits.astype(np.float64) / s.temperature
    mx = x.max(axis=1)
    lse = mx + np.log(np.exp(x - mx[:, None]).sum(axis=1))
    return lambda row, tok: float(np.exp(x[row, tok] - lse[row]))


# -- cost micro-benchmark ----------------------------------------------------------------------


@dataclass
class Costs:
    """Median seconds. t_verify[n-1]: target forward over n tokens (n = 1..k_max+1);
    t_check[n-1]: verifying n logits rows; t_step[draft]: one draft model step (0 for ngram)."""

    t_verify: list[float]
    t_check: list[float]
    t_step: dict[str, float]

    @property
    def t_ar(self) -> float:
        return self.t_verify[0] + self.t_check[0]


def _median_times(fns: list[Callable[[], None]], reps: int) -> list[float]:
    """Median time of each fn over reps rounds (interleaved, so drift hits all alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def _copy_forward(be: Backend, tokens: list[int], n: int, base: int) -> np.ndarray:
    """logits [n, V] copied out of the backend, then the cache cut back to base."""
    out = np.array(be.forward(tokens, n))
    be.rollback(base)
    return out


def measure_costs(target: Backend, drafts: dict[str, Backend | None], ctx: list[int], k_max: int,
                  temperatures: Sequence[float], reps: int = 7) -> dict[float, Costs]:
    """Costs per temperature at context ctx; model forwards are timed once (they do not depend on
    the temperature), the numpy work per temperature. drafts: name -> backend, or None (n-gram)."""
    rng = np.random.default_rng(0)
    vt = target.vocab.n_vocab
    toks = (ctx * (k_max + 2))[-(k_max + 1):]
    target.rollback(0)
    target.forward(ctx[:-1], 0)
    base = target.n_past

    def verify_fn(n: int) -> Callable[[], None]:
        def fn() -> None:
            target.forward(toks[:n], n)
            target.rollback(base)
        return fn

    t_verify = _median_times([verify_fn(n) for n in range(1, k_max + 2)], reps)
    rows = {n: _copy_forward(target, toks[:n], n, base) for n in range(1, k_max + 2)}
    target.rollback(0)
    t_fwd: dict[str, float] = {}
    draft_rows: dict[str, np.ndarray] = {}
    seen: dict[int, str] = {}  # id(backend) -> first name: a shared draft model is timed once
    for name, be in drafts.items():
        if be is None:
            continue
        if id(be) in seen:
            t_fwd[name], draft_rows[name] = t_fwd[seen[id(be)]], draft_rows[seen[id(be)]]
            continue
        seen[id(be)] = name
        be.rollback(0)
        be.forward(ctx[:-1], 0)
        dbase = be.n_past

        def step(be: Backend = be, dbase: int = dbase) -> None:
            be.forward(ctx[-1:], 1)
            be.rollback(dbase)

        t_fwd[name] = _median_times([step], reps)[0]
        draft_rows[name] = _copy_forward(be, ctx[-1:], 1, dbase)[0]
        be.rollback(0)
    out = {}
    for t in temperatures:
        s = SamplingConfig(temperature=t)
        if s.greedy:
            checks = [lambda n=n: verify_greedy(toks[1:n], rows[n]) for n in range(1, k_max + 2)]
            pick = [lambda r=r: np.argmax(r[:vt]) for r in draft_rows.values()]
        else:
            checks = [lambda n=n, s=s: verify_sampling(toks[1:n], None, probs(rows[n], s), rng)
                      for n in range(1, k_max + 2)]
            pick = [lambda r=r, s=s: probs(r[None, :vt], s) for r in draft_rows.values()]
        t_check = _median_times(checks, reps)
        t_pick = dict(zip(draft_rows, _median_times(pick, reps)))
        out[t] = Costs(t_verify, t_check, {n: t_fwd[n] + t_pick[n] if n in t_fwd else 0.0
                                           for n in drafts})
    return out


# -- per draft sources for the replay ----------------------------------------------------------


def replay_source(drafter: Drafter, ctx: list[int], cont: list[int], acc: np.ndarray | None,
                  p_tok: Callable[[int, int], float] | None
                  ) -> tuple[Propose, Callable[[int, int], None]]:
    """propose/feedback for one replay of a replayable drafter (reset here, then driven through
    its `lookup` and `feedback`: a model-free proposal is replayed token by token, else the model
    drafts with acceptance acc [L] (None: no model); p_tok(row, token): the target's probability
    when sampling (None: greedy)."""
    n_prompt = len(ctx)
    full = ctx + cont
    drafter.reset()

    def propose(j: int, k: int) -> tuple[Sequence[float], int]:
        toks = drafter.lookup(full[:n_prompt + j], k)
        if toks is None:
            return acc[j:j + k], k
        if p_tok is None:
            return [1.0 if t == cont[j + i] else 0.0 for i, t in enumerate(toks)], 0
        return [p_tok(j + i, t) for i, t in enumerate(toks)], 0

    return propose, drafter.feedback
