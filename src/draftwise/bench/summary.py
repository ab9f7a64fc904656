"""Aggregate sweep runs per configuration: throughput, speedup vs AR with a CI, acceptance, times.

Speedup: for every (prompt, repeat) the configuration's decode tok/s over AR's on the same prompt
and repeat (run back to back); the point estimate is the geometric mean of these paired ratios and
the 95% interval a percentile bootstrap over them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from draftwise.bench.drafts import quant_of
from draftwise.bench.runner import BenchConfig, RunRecord, series

N_BINS = 8  # bins of the acceptance-vs-position curve over max_tokens


def bootstrap_ci(log_ratios: np.ndarray, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of exp(mean(log_ratios)); log_ratios [n]."""
    x = np.asarray(log_ratios, dtype=float)
    if x.size < 2:
        v = float(np.exp(x.mean())) if x.size else float("nan")
        return v, v
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(np.exp(lo)), float(np.exp(hi))


@dataclass
class ConfigSummary:
    """One configuration over all its runs. Times are ms per generated token."""

    label: str
    draft: str
    k: int | None
    temperature: float
    quant: str
    n_runs: int
    n_tokens: int
    tok_s: float  # median over runs
    tok_s_q1: float
    tok_s_q3: float
    speedup: float  # vs AR, geometric mean of paired ratios (1.0 for AR)
    speedup_lo: float
    speedup_hi: float
    speedup_e2e: float  # the same with prefill included (a draft model prefills too)
    alpha: float
    tau: float
    mean_k: float
    acceptance_at: list[float] = field(default_factory=list)  # [K] P(accept i | 0..i-1 accepted)
    ms_draft: float = 0.0
    ms_target: float = 0.0
    ms_overhead: float = 0.0
    identical: float | None = None  # greedy: fraction of runs with AR's exact tokens
    by_position: list[tuple[int, float, int]] = field(default_factory=list)  # (bin start, alpha, n)
    by_prompt_len: list[tuple[int, float, int]] = field(default_factory=list)  # (n_prompt, a, n)
    by_category: dict[str, float] = field(default_factory=dict)  # speedup per prompt category
    accept: str = "exact"  # the acceptance mode; anything else is lossy
    n_lenient: int = 0  # tokens kept that exact verification would have rejected, all runs

    @property
    def is_ar(self) -> bool:
        return self.draft == "none"

    @property
    def exact(self) -> bool:
        return self.accept == "exact"

    @property
    def series(self) -> str:
        return series(self.draft, self.accept)


def _acceptance_by_position(runs: list[RunRecord], width: int) -> list[tuple[int, float, int]]:
    """(bin start, acceptance, positions) binned by tokens generated so far.

    Acceptance here is accepted / drafted positions reached (a position after a rejection is not
    reached), the per-token rate that does not depend on K.
    """
    acc: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r in runs:
        pos = 0
        for k, n in r.rounds:
            if k:
                b = acc[pos // width]
                b[0] += n
                b[1] += min(k, n + 1)
            pos += n + 1
    return [(i * width, a / d, d) for i, (a, d) in sorted(acc.items()) if d]


def _acceptance_by_prompt(runs: list[RunRecord]) -> list[tuple[int, float, int]]:
    """(prompt length, acceptance, positions) per prompt; acceptance as by position."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in runs:
        p = per[r.prompt_id]
        p[0] = r.n_prompt
        p[1] += sum(n for _, n in r.rounds)
        p[2] += sum(min(k, n + 1) for k, n in r.rounds if k)
    return sorted((n, a / d, d) for n, a, d in per.values() if d)


def summarize(records: list[RunRecord], max_tokens: int = 128) -> list[ConfigSummary]:
    """One summary per configuration, in first-seen order."""
    width = max(1, -(-max_tokens // N_BINS))
    by_cfg: dict[BenchConfig, list[RunRecord]] = defaultdict(list)
    for r in records:
        by_cfg[r.config].append(r)
    ar = {(r.config.temperature, r.prompt_id, r.repeat): r for r in records if r.config.is_ar}
    out = []
    for cfg, runs in by_cfg.items():
        tok_s = np.array([r.tok_s for r in runs])
        pairs = [(r, ar.get((cfg.temperature, r.prompt_id, r.repeat))) for r in runs]
        pairs = [(r, a) for r, a in pairs if a is not None and a.tok_s > 0 and r.tok_s > 0]
        logs = np.log([r.tok_s / a.tok_s for r, a in pairs]) if pairs else np.zeros(0)
        e2e = [np.log((r.n_generated / (r.t_decode + r.t_prefill))
                      / (a.n_generated / (a.t_decode + a.t_prefill))) for r, a in pairs]
        lo, hi = bootstrap_ci(logs)
        per_cat: dict[str, list[float]] = defaultdict(list)
        for (r, _), x in zip(pairs, logs):
            per_cat[r.category].append(float(x))
        n_tok = sum(r.n_generated for r in runs) or 1
        drafted = sum(k for r in runs for k, _ in r.rounds)
        accepted = sum(sum(n for _, n in r.rounds) for r in runs)
        n_rounds = sum(len(r.rounds) for r in runs)
        d_at = _sum_lists([r.drafted_at for r in runs])
        a_at = _sum_lists([r.accepted_at for r in runs])
        ks = [k for r in runs for k, _ in r.rounds]
        ident = [r.identical for r in runs if r.identical is not None]
        out.append(ConfigSummary(
            label=cfg.label, draft=cfg.draft, k=cfg.k, temperature=cfg.temperature,
            quant="-" if cfg.is_ar else quant_of(cfg.draft), n_runs=len(runs), n_tokens=n_tok,
            tok_s=float(np.median(tok_s)), tok_s_q1=float(np.quantile(tok_s, 0.25)),
            tok_s_q3=float(np.quantile(tok_s, 0.75)),
            speedup=float(np.exp(logs.mean())) if logs.size else float("nan"),
            speedup_lo=lo, speedup_hi=hi,
            speedup_e2e=float(np.exp(np.mean(e2e))) if e2e else float("nan"),
            alpha=accepted / drafted if drafted else 0.0,
            tau=(sum(r.n_generated for r in runs) / n_rounds) if n_rounds else 1.0,
            mean_k=float(np.mean(ks)) if ks else 0.0,
            acceptance_at=[a / d if d else 0.0 for a, d in zip(a_at, d_at)],
            ms_draft=1e3 * sum(r.t_draft for r in runs) / n_tok,
            ms_target=1e3 * sum(r.t_target for r in runs) / n_tok,
            ms_overhead=1e3 * sum(r.t_overhead for r in runs) / n_tok,
            identical=(sum(ident) / len(ident)) if ident else None,
            by_position=_acceptance_by_position(runs, width),
            by_prompt_len=_acceptance_by_prompt(runs),
            by_category={c: float(np.exp(np.mean(v))) for c, v in per_cat.items()},
            accept=cfg.accept, n_lenient=sum(r.n_lenient for r in runs)))
    return out


def _sum_lists(lists: list[list[int]]) -> list[int]:
    out = [0] * max((len(x) for x in lists), default=0)
    for x in lists:
        for i, v in enumerate(x):
            out[i] += v
    return out


@dataclass
class Recommendation:
    """The best configuration at one temperature, and whether it beats AR significantly."""

    temperature: float
    beats_ar: bool
    label: str = "AR"
    draft: str = "none"
    k: int | None = 0
    quant: str = "-"
    speedup: float = 1.0
    speedup_lo: float = 1.0
    speedup_hi: float = 1.0
    text: str = ""


def recommend(summaries: list[ConfigSummary]) -> list[Recommendation]:
    """Per temperature: the fastest lossless configuration whose 95% CI lies above 1, else AR,
    plainly. Lossy (lenient) configurations are never recommended: their price is quality."""
    out = []
    for t in dict.fromkeys(s.temperature for s in summaries):
        cands = [s for s in summaries if s.temperature == t and not s.is_ar and s.exact
                 and np.isfinite(s.speedup)]
        if not cands:
            continue
        best = max(cands, key=lambda s: s.speedup)
        sig = [s for s in cands if s.speedup_lo > 1.0]
        ci = f"95% CI {best.speedup_lo:.2f}-{best.speedup_hi:.2f}"
        if sig:
            b = max(sig, key=lambda s: s.speedup)
            k = "adaptive K" if b.k is None else f"K={b.k}"
            text = (f"T={t:g}: use draft {b.draft} ({b.quant}) with {k}: expected speedup "
                    f"{b.speedup:.2f}x over autoregressive (95% CI {b.speedup_lo:.2f}-"
                    f"{b.speedup_hi:.2f}).")
            out.append(Recommendation(t, True, b.label, b.draft, b.k, b.quant, b.speedup,
                                      b.speedup_lo, b.speedup_hi, text))
        elif best.speedup > 1.0:
            out.append(Recommendation(t, False, text=(
                f"T={t:g}: nothing beats autoregressive decoding clearly: the best, {best.label}, "
                f"is {best.speedup:.2f}x ({ci}, which includes 1). Use plain decoding (--draft "
                "none) or measure with more prompts and repeats.")))
        else:
            out.append(Recommendation(t, False, text=(
                f"T={t:g}: nothing beats autoregressive decoding: the best, {best.label}, is "
                f"{best.speedup:.2f}x ({ci}). Use plain decoding (--draft none).")))
    return out
