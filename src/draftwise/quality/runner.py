"""Run every mode (AR, exact speculative decoding, each lossy acceptance) on the same problems,
greedy, and check each completion.

Per problem the modes run back to back in an order rotated by the problem (as bench's sweep), each
completion is cut at the task's stop strings and checked (HumanEval: in the sandbox), and compared
with AR's: `differs` when the text differs, `diverged_at` the first generated token that differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from draftwise.backends.base import Backend
from draftwise.bench.runner import PreparedPrompt
from draftwise.config import GenerateConfig, SpecConfig, check_k
from draftwise.drafters.base import Drafter
from draftwise.engine import Engine
from draftwise.errors import DraftwiseError
from draftwise.quality.sandbox import Limits
from draftwise.quality.tasks import Problem, Task, get_task
from draftwise.stats import Stats


@dataclass(frozen=True)
class Mode:
    """AR (draft None), or a draft with an acceptance mode (`exact` is lossless)."""

    draft: str | None
    accept: str = "exact"

    @property
    def is_ar(self) -> bool:
        return self.draft is None

    def label(self, several_drafts: bool) -> str:
        if self.is_ar:
            return "AR"
        return f"{self.draft} {self.accept}" if several_drafts else self.accept


@dataclass(frozen=True)
class QualityOptions:
    """AR, then per draft exact SD and each lossy mode in `accepts`, greedy, with a fixed K."""

    target: str
    drafts: tuple[str, ...]
    tasks: tuple[str, ...] = ("humaneval",)
    accepts: tuple[str, ...] = ("exact",)
    k: int = 3  # the best K of the README's measurements on 2 cores
    n_problems: int = 20
    offset: int = 0
    max_tokens: int | None = None  # None: each task's own default
    limits: Limits = Limits()

    def __post_init__(self) -> None:
        if not self.drafts:
            raise DraftwiseError("bench --quality needs a draft model (--draft NAME)")
        for t in self.tasks:
            get_task(t)
        check_k(self.k)
        # a bad mode string, or one not defined for greedy decoding, raises here
        rules = [SpecConfig(k=self.k, k_max=self.k, accept=a).rule for a in ("exact", *self.accepts)]
        for r in rules:
            r.check(greedy=True)
        object.__setattr__(self, "accepts", tuple(dict.fromkeys(r.name for r in rules)))
        if self.max_tokens is not None and self.max_tokens < 2:
            raise DraftwiseError(f"max_tokens must be >= 2, got {self.max_tokens}")
        if self.n_problems < 1 or self.offset < 0:
            raise DraftwiseError(f"--n-problems must be >= 1 and the offset >= 0, got "
                                 f"{self.n_problems} and {self.offset}")

    @property
    def modes(self) -> list[Mode]:
        return [Mode(None)] + [Mode(d, a) for d in self.drafts for a in self.accepts]

    def label(self, mode: Mode) -> str:
        return mode.label(len(self.drafts) > 1)


@dataclass
class QualityRecord:
    """One completion of one problem in one mode. Times in seconds."""

    task: str
    problem_id: str
    mode: str  # label
    draft: str  # "none" for AR
    accept: str  # "-" for AR
    completion: str
    n_generated: int
    t_decode: float
    t_prefill: float
    n_drafted: int
    n_accepted: int
    n_lenient: int
    n_rounds: int
    status: str  # the check's outcome (sandbox.Outcome.status) and its detail
    detail: str
    differs: bool | None = None  # not AR: the completion's text differs from AR's
    diverged_at: int | None = None  # ... and the first generated token that differs

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def tok_s(self) -> float:
        return self.n_generated / self.t_decode if self.t_decode > 0 else 0.0


def generate(target: Backend, drafter: Drafter | None, mode: Mode, k: int, ids: list[int],
             max_tokens: int, stop: Sequence[str]) -> tuple[str, list[int], Stats]:
    """One greedy completion: (text cut at the stop strings, generated tokens, stats)."""
    spec = SpecConfig(k=k, k_max=k, accept=mode.accept)
    run = Engine(target, drafter, spec).run(ids, GenerateConfig(max_tokens=max_tokens,
                                                                stop=tuple(stop)))
    text = "".join(run)
    return text, list(run.tokens), run.stats


def first_difference(tokens: Sequence[int], ar: Sequence[int]) -> int:
    """Index of the first differing token (the shorter length if one extends the other)."""
    return next((i for i, (a, b) in enumerate(zip(tokens, ar)) if a != b), min(len(tokens),
                                                                               len(ar)))


def run_task(opts: QualityOptions, task: Task, prepared: Sequence[PreparedPrompt],
             problems: dict[str, Problem], target: Backend, drafters: dict[str, Drafter],
             on_run: Callable[[QualityRecord], None] | None = None) -> list[QualityRecord]:
    """Every mode on every prepared problem of one task; records in (problem, mode) order."""
    modes = opts.modes
    max_tokens = opts.max_tokens or task.max_tokens
    if prepared:  # first calls map weights and size buffers: keep them out of the timings
        for m in modes:
            generate(target, drafters.get(m.draft), m, opts.k, prepared[0].ids, 8, ())
    out: list[QualityRecord] = []
    for pi, pp in enumerate(prepared):
        shift = pi % len(modes)
        done: dict[Mode, tuple[QualityRecord, list[int]]] = {}
        for m in modes[shift:] + modes[:shift]:
            text, tokens, st = generate(target, drafters.get(m.draft), m, opts.k, pp.ids,
                                        max_tokens, task.stop)
            outcome = task.check(problems[pp.prompt.id], text, opts.limits)
            rec = QualityRecord(task.name, pp.prompt.id, opts.label(m), m.draft or "none",
                                "-" if m.is_ar else m.accept, text, st.n_generated,
                                st.t_decode, st.t_prefill, st.n_drafted, st.n_accepted,
                                st.n_lenient, st.n_rounds, outcome.status, outcome.detail)
            done[m] = (rec, tokens)
            if on_run:
                on_run(rec)
        ar_rec, ar_tokens = done[modes[0]]
        for m in modes:
            rec, tokens = done[m]
            if not m.is_ar:
                differs = rec.completion != ar_rec.completion
                rec = replace(rec, differs=differs, diverged_at=first_difference(
                    tokens, ar_tokens) if differs else None)
            out.append(rec)
    return out
