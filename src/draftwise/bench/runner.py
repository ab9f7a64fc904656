"""Run a sweep: AR and every speculative configuration, interleaved per prompt and repeat.

One target backend and one drafter per draft name are loaded once and shared by all engines. For
each prompt and repeat the configurations run back to back, in an order rotated by the repeat, so
that a slow phase of a noisy machine hits all of them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from draftwise.acceptance import parse_accept
from draftwise.backends.base import Backend
from draftwise.bench.options import BenchOptions
from draftwise.bench.prompts import Prompt
from draftwise.compare import ar_reference, divergence
from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.drafters.base import Drafter
from draftwise.engine import Engine
from draftwise.policy import KPolicy, make_policy


def series(draft: str, accept: str) -> str:
    """The draft, and the acceptance mode when lossy: what plots draw one line for."""
    return draft if accept == "exact" else f"{draft} {accept} (lossy)"


@dataclass(frozen=True)
class BenchConfig:
    """One configuration: draft 'none' is AR (k 0); adaptive K has k None; accept: the acceptance
    mode's canonical name (anything but `exact` is lossy)."""

    draft: str
    k: int | None
    temperature: float
    accept: str = "exact"

    @property
    def is_ar(self) -> bool:
        return self.draft == "none"

    @property
    def label(self) -> str:
        if self.is_ar:
            return "AR"
        name = series(self.draft, self.accept)
        return f"{name} K={self.k}" if self.k is not None else f"{name} adaptive"


@dataclass
class RunRecord:
    """One generation. rounds: (k drafted, n accepted) per round (empty for AR). Times in s."""

    config: BenchConfig
    prompt_id: str
    category: str
    repeat: int
    n_prompt: int
    n_generated: int
    t_prefill: float
    t_decode: float
    t_draft: float
    t_target: float
    finish_reason: str
    drafted_at: list[int]
    accepted_at: list[int]
    rounds: list[tuple[int, int]] = field(default_factory=list)
    identical: bool | None = None  # greedy: the same tokens as AR on this prompt and repeat
    diverged_at: int | None = None  # greedy, not identical: first differing token ...
    ar_margin: float | None = None  # ... and AR's top-2 logit margin there (small: a near-tie)
    n_lenient: int = 0  # tokens a lossy mode kept that exact verification would have rejected

    @property
    def tok_s(self) -> float:
        return self.n_generated / self.t_decode if self.t_decode > 0 else 0.0

    @property
    def t_overhead(self) -> float:
        return max(0.0, self.t_decode - self.t_draft - self.t_target)


def sweep_configs(opts: BenchOptions) -> list[BenchConfig]:
    """AR, then each draft at each K (and adaptive) in each acceptance mode that applies to the
    temperature, for every temperature."""
    out = []
    for t in opts.temperatures:
        out.append(BenchConfig("none", 0, t))
        accepts = [a for a in opts.accepts if parse_accept(a).applies(t == 0)]
        for d in opts.drafts:
            for a in accepts:
                out += [BenchConfig(d, k, t, a) for k in opts.ks]
                if opts.adaptive:
                    out.append(BenchConfig(d, None, t, a))
    return out


def run_spec(cfg: BenchConfig, opts: BenchOptions) -> SpecConfig:
    """The SpecConfig of a configuration: adaptive K up to the largest swept K."""
    if cfg.k is None:
        return SpecConfig(k=min(SpecConfig.k, opts.k_max), adaptive=True, k_max=opts.k_max,
                          p_min=opts.p_min, accept=cfg.accept)
    return SpecConfig(k=max(cfg.k, 1), k_max=max(cfg.k, 1), p_min=opts.p_min, accept=cfg.accept)


def run_one(target: Backend, drafter: Drafter | None, cfg: BenchConfig, opts: BenchOptions,
            prompt_ids: list[int], seed: int, max_tokens: int,
            policy: KPolicy | None = None) -> tuple[RunRecord, list[int]]:
    """Generate once with cfg; returns the record (prompt fields unset) and the tokens.
    policy: the configuration's policy kept across runs; a new one if None."""
    spec = run_spec(cfg, opts)
    engine = Engine(target, drafter, spec, policy or make_policy(spec))
    gen = GenerateConfig(max_tokens=max_tokens,
                         sampling=SamplingConfig(temperature=cfg.temperature, seed=seed))
    run = engine.run(prompt_ids, gen)
    rounds = [(r.k, r.n_accepted) for r in run.rounds()]
    st = run.stats
    rec = RunRecord(cfg, "", "", 0, st.n_prompt, st.n_generated, st.t_prefill, st.t_decode,
                    st.t_draft, st.t_target, st.finish_reason, list(st.drafted_at),
                    list(st.accepted_at), rounds if drafter is not None else [],
                    n_lenient=st.n_lenient)
    return rec, run.tokens


@dataclass
class PreparedPrompt:
    prompt: Prompt
    ids: list[int]


def run_sweep(opts: BenchOptions, prompts: Sequence[PreparedPrompt], target: Backend,
              drafters: dict[str, Drafter], on_run: Callable[[RunRecord], None] | None = None,
              warmup_tokens: int = 8) -> list[RunRecord]:
    """All runs of the sweep, in execution order; on_run is called after each one."""
    configs = sweep_configs(opts)
    if warmup_tokens and prompts:  # first calls map weights and size buffers: keep them untimed
        for cfg in configs:
            if cfg.k in (None, opts.k_max) or cfg.is_ar:
                run_one(target, drafters.get(cfg.draft), cfg, opts, prompts[0].ids, 0,
                        warmup_tokens)
    # One policy per configuration for the whole sweep, as in `serve` (and `generate`, which
    # loads the costs measured before): adaptive K keeps its costs across generations.
    policies = {cfg: make_policy(run_spec(cfg, opts)) for cfg in configs}
    records: list[RunRecord] = []
    for temp in opts.temperatures:
        group = [c for c in configs if c.temperature == temp]
        for pi, pp in enumerate(prompts):
            for rep in range(opts.repeats):
                seed = opts.seed + 1000 * pi + rep
                shift = (pi * opts.repeats + rep) % len(group)  # vary who runs first
                results = {}
                for cfg in group[shift:] + group[:shift]:
                    rec, tokens = run_one(target, drafters.get(cfg.draft), cfg, opts, pp.ids,
                                          seed, opts.max_tokens, policies[cfg])
                    rec.prompt_id, rec.category, rec.repeat = pp.prompt.id, pp.prompt.category, rep
                    results[cfg] = (rec, tokens)
                    if on_run:
                        on_run(rec)
                ar_tokens = results[group[0]][1]
                margins = None
                for cfg in group:
                    rec, tokens = results[cfg]
                    if temp == 0 and not cfg.is_ar:
                        rec.identical = tokens == ar_tokens
                        if not rec.identical:
                            margins = margins or ar_reference(
                                target, pp.ids, GenerateConfig(max_tokens=opts.max_tokens))[1]
                            div = divergence(tokens, ar_tokens, margins)
                            rec.diverged_at, rec.ar_margin = div.index, div.ar_margin
                    records.append(rec)
    return records

