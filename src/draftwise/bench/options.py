"""What a `bench` sweep or an `advise` run does and on which prompts, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from draftwise.acceptance import parse_accept
from draftwise.bench.prompts import Prompt, load_prompts
from draftwise.config import check_k, parse_k_range
from draftwise.errors import DraftwiseError


def _check_drafts(drafts: tuple[str, ...]) -> None:
    if not drafts:
        raise DraftwiseError("give at least one draft (a model name, ngram or ngram+MODEL)")
    if any(d.lower() in ("", "none") for d in drafts):
        raise DraftwiseError("`none` is not a draft: autoregressive decoding is always run")


def _check_common(temperatures: tuple[float, ...], max_tokens: int) -> None:
    if not temperatures or any(not t >= 0 for t in temperatures):
        raise DraftwiseError(f"temperatures must be >= 0, got {list(temperatures)}")
    if max_tokens < 2:
        raise DraftwiseError(f"max_tokens must be >= 2, got {max_tokens}")


def _check_accepts(accepts: tuple[str, ...], temperatures: tuple[float, ...]) -> tuple[str, ...]:
    """Canonical, unique mode names, each applying to at least one of the temperatures."""
    if not accepts:
        raise DraftwiseError("give at least one --accept mode (exact is the lossless one)")
    rules = list(dict.fromkeys(parse_accept(a) for a in accepts))
    for r in rules:
        if not any(r.applies(t == 0) for t in temperatures):
            r.check(temperatures[0] == 0)  # raises: says which decoding the mode is for
    return tuple(r.name for r in rules)


@dataclass(frozen=True)
class PromptOptions:
    """Built-in prompt sets (categories, default code) or a JSONL file; n per set after offset."""

    categories: tuple[str, ...] = ()
    prompt_file: str | None = None
    n_prompts: int = 10
    offset: int = 0

    def load(self) -> list[Prompt]:
        """The prompts (validated by load_prompts: bad counts, files and categories raise)."""
        return load_prompts(self.categories, self.prompt_file, self.n_prompts, self.offset)


@dataclass(frozen=True)
class BenchOptions:
    """A sweep: AR plus every draft x K (plus adaptive K per draft) x acceptance mode, at each
    temperature. accepts: `exact` and/or lossy modes, each run where it applies (draftwise.acceptance)."""

    target: str
    drafts: tuple[str, ...] = ("ngram",)
    ks: tuple[int, ...] | str = (1, 2, 3, 4, 5, 6, 7, 8)  # a spec like "1-8" is parsed
    adaptive: bool = True
    temperatures: tuple[float, ...] = (0.0,)
    max_tokens: int = 128
    repeats: int = 3
    p_min: float = 0.0
    seed: int = 0
    accepts: tuple[str, ...] = ("exact",)

    def __post_init__(self) -> None:
        _check_drafts(self.drafts)
        object.__setattr__(self, "ks", parse_k_range(self.ks))
        _check_common(self.temperatures, self.max_tokens)
        object.__setattr__(self, "accepts", _check_accepts(self.accepts, self.temperatures))
        if self.repeats < 1:
            raise DraftwiseError(f"repeats must be >= 1, got {self.repeats}")
        if not 0 <= self.p_min < 1:
            raise DraftwiseError(f"p_min must be in [0, 1), got {self.p_min}")

    @property
    def k_max(self) -> int:
        return max(self.ks)


@dataclass(frozen=True)
class AdviseOptions:
    """Predict K = 1..k_max for each draft at each temperature; reps: micro-benchmark repeats."""

    target: str
    drafts: tuple[str, ...]
    k_max: int = 8
    temperatures: tuple[float, ...] = (0.0,)
    max_tokens: int = 128
    reps: int = 7
    seed: int = 0
    out_dir: str | None = None

    def __post_init__(self) -> None:
        _check_drafts(self.drafts)
        check_k(self.k_max, "k_max")
        _check_common(self.temperatures, self.max_tokens)
        if self.reps < 1:
            raise DraftwiseError(f"reps must be >= 1, got {self.reps}")
