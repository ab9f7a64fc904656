"""`draftwise advise`: predicted speedup per draft and K, in minutes instead of a full sweep."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from draftwise.bench.advise import (
    Costs,
    Replay,
    continuation,
    greedy_agreement,
    iid_speedup,
    measure_costs,
    overlap,
    replay,
    replay_source,
    teacher_forced,
    token_probs,
)
from draftwise.bench.drafts import quant_of
from draftwise.bench.options import AdviseOptions, PromptOptions
from draftwise.bench.report import _clean
from draftwise.bench.session import Models, load_models, machine_info, prepare
from draftwise.config import SamplingConfig
from draftwise.errors import DraftwiseError
from draftwise.loader import BackendOptions
from draftwise.policy.expected import expected_tokens

N_SIMS = 16  # Monte Carlo replays per prompt when sampling
MIN_GAIN = 1.02  # a predicted gain below 2% is within measurement noise: not worth a draft


@dataclass
class KPrediction:
    k: int
    tau: float  # tokens per round, replayed
    tau_iid: float  # (1 - alpha^(K+1)) / (1 - alpha)
    speedup: float  # replayed rounds with measured costs
    speedup_iid: float  # Leviathan's formula with the same costs


@dataclass
class DraftAdvice:
    draft: str
    temperature: float
    quant: str
    alpha: float  # the draft model's mean acceptance per position; n-gram: accepted / drafted
    t_step_ms: float
    per_k: list[KPrediction]
    best_k: int
    best_speedup: float


@dataclass
class AdviseResult:
    target: str
    k_max: int
    prompts: list[dict]  # id, n_prompt, n_continuation, ar_tok_s
    costs: dict[str, dict]  # temperature -> Costs as a dict
    advice: list[DraftAdvice]
    recommendations: list[str]
    machine: dict = field(default_factory=dict)


def predict(name: str, temperature: float, totals: dict[int, Replay], alpha: float | None,
            costs: Costs) -> DraftAdvice:
    """Per-K predictions from replay totals {K: Replay} and measured costs."""
    t_step = costs.t_step[name]
    per_k = []
    for k, rp in sorted(totals.items()):
        a = alpha if alpha is not None else (rp.accepted / rp.drafted if rp.drafted else 0.0)
        t = rp.seconds(t_step, costs.t_verify, costs.t_check)
        per_k.append(KPrediction(
            k, rp.tau, expected_tokens(a, k),
            rp.tokens * costs.t_ar / t if t > 0 else math.nan,
            iid_speedup(a, k, costs.t_ar, t_step, costs.t_verify[k], costs.t_check[k])))
    best = max(per_k, key=lambda p: p.speedup)
    if alpha is None:
        rp = totals[best.k]
        alpha = rp.accepted / rp.drafted if rp.drafted else 0.0
    return DraftAdvice(name, temperature, quant_of(name), alpha, 1e3 * t_step, per_k, best.k,
                       best.speedup)


def _collect(models: Models, kept, temps: Sequence[float], k_max: int, max_tokens: int, seed: int,
             con: Console):
    """Replays every draft x temperature x K over each prompt's continuation."""
    rng = np.random.default_rng(seed)
    tgt = models.target
    totals: dict[tuple[str, float], dict[int, Replay]] = defaultdict(
        lambda: {k: Replay(verified=[0] * (k + 1)) for k in range(1, k_max + 1)})
    acc_sum: dict[tuple[str, float], list[float]] = defaultdict(lambda: [0.0, 0])
    used, bench_ctx = [], None
    for pp in kept:
        with con.status(f"{pp.prompt.id}: target continues the prompt"):
            cont, ar_tok_s = continuation(tgt, pp.ids, max_tokens)
        if len(cont) < 2:
            continue
        used.append({"id": pp.prompt.id, "category": pp.prompt.category, "n_prompt": len(pp.ids),
                     "n_continuation": len(cont), "ar_tok_s": ar_tok_s})
        bench_ctx = bench_ctx or pp.ids + cont
        with con.status(f"{pp.prompt.id}: teacher-forced passes"):
            tl = teacher_forced(tgt, pp.ids, cont) if any(t > 0 for t in temps) else None
            by_backend: dict[int, np.ndarray] = {}  # a model shared by drafts runs once
            dls = {}
            for name, d in models.drafters.items():
                be = d.model_backend()
                if be is not None and id(be) not in by_backend:
                    by_backend[id(be)] = teacher_forced(be, pp.ids, cont)
                dls[name] = by_backend[id(be)] if be is not None else None
        for t in temps:
            s = SamplingConfig(temperature=t)
            p_tok = None if s.greedy else token_probs(tl, s)
            for name, drafter in models.drafters.items():
                dl = dls[name]
                acc = None
                if dl is not None:
                    acc = (greedy_agreement(dl, cont, tgt.vocab.n_vocab) if s.greedy
                           else overlap(tl, dl, s))
                if acc is not None:  # n-gram: alpha from the replay
                    acc_sum[(name, t)][0] += float(acc.sum())
                    acc_sum[(name, t)][1] += len(acc)
                for k in range(1, k_max + 1):
                    for _ in range(1 if s.greedy else N_SIMS):
                        propose, fb = replay_source(drafter, pp.ids, cont, acc, p_tok)
                        totals[(name, t)][k].add(replay(len(cont), propose, k, rng, fb))
    if not used:
        raise DraftwiseError("the target ended every continuation at once; use other prompts")
    return totals, acc_sum, used, bench_ctx


def advice_table(advice: list[DraftAdvice], k_max: int) -> Table:
    table = Table(title="draftwise advise: predicted speedup over autoregressive",
                  header_style="bold")
    for h in ["draft", "quant", "T", "alpha", "step ms"] + [f"K={k}" for k in range(1, k_max + 1)] \
            + ["best K"]:
        table.add_column(h, justify="left" if h in ("draft", "quant") else "right")
    for a in advice:
        cells = [f"[bold]{p.speedup:.2f}[/]" if p.k == a.best_k else f"{p.speedup:.2f}"
                 for p in a.per_k]
        table.add_row(a.draft, a.quant, f"{a.temperature:g}", f"{a.alpha:.2f}",
                      f"{a.t_step_ms:.1f}", *cells,
                      str(a.best_k) if a.best_speedup >= MIN_GAIN else "off")
    return table


def recommend_advice(advice: list[DraftAdvice]) -> list[str]:
    out = []
    for t in dict.fromkeys(a.temperature for a in advice):
        best = max((a for a in advice if a.temperature == t), key=lambda a: a.best_speedup)
        if best.best_speedup >= MIN_GAIN:
            out.append(f"T={t:g}: use draft {best.draft} ({best.quant}) with K={best.best_k}: "
                       f"predicted speedup {best.best_speedup:.2f}x over autoregressive.")
        else:
            out.append(f"T={t:g}: no draft is predicted to beat autoregressive decoding (best: "
                       f"{best.draft} K={best.best_k} at {best.best_speedup:.2f}x); use --draft "
                       "none.")
    return out


def run_advise(opts: AdviseOptions, prompt_opts: PromptOptions = PromptOptions(n_prompts=4),
               backend: BackendOptions = BackendOptions(), console: Console | None = None
               ) -> AdviseResult:
    """Predict speedup per draft and K = 1..k_max; prints a table and the recommendation, writes
    out_dir/advise.json when opts.out_dir is given. Bad input raises DraftwiseError."""
    con = console or Console()
    prompts = prompt_opts.load()
    target, k_max, reps = opts.target, opts.k_max, opts.reps
    con.print(f"loading {target} and {len(opts.drafts)} draft(s)")
    with load_models(target, opts.drafts, backend) as models:
        for name, d in models.drafters.items():
            if not d.replayable:
                raise DraftwiseError(f"advise needs drafts that share the target's token ids (or "
                                     f"ngram); {name} drafts through a token map or tokenizer "
                                     "bridge: measure it with `draftwise bench`")
        kept, _ = prepare(prompts, models, opts.max_tokens + k_max + 2)
        totals, acc_sum, used, ctx = _collect(models, kept, opts.temperatures, k_max,
                                              opts.max_tokens, opts.seed, con)
        with con.status("micro-benchmark: draft step and verify costs"):
            backends = {n: d.model_backend() for n, d in models.drafters.items()}
            costs = measure_costs(models.target, backends, ctx, k_max, opts.temperatures, reps)
        machine = machine_info(models)
    advice = []
    for (name, t), per_k in totals.items():
        a_sum, n = acc_sum.get((name, t), (0.0, 0))
        advice.append(predict(name, t, per_k, a_sum / n if n else None, costs[t]))
    res = AdviseResult(target, k_max, used, {f"{t:g}": asdict(c) for t, c in costs.items()},
                       advice, recommend_advice(advice), machine)
    c0 = costs[opts.temperatures[0]]
    con.print(f"target: {1e3 * c0.t_verify[0]:.1f} ms per token autoregressive "
              f"(measured {np.median([p['ar_tok_s'] for p in used]):.1f} tok/s while continuing), "
              f"verify {' '.join(f'{1e3 * v:.0f}' for v in c0.t_verify)} ms for 1..{k_max + 1} "
              "tokens")
    con.print(advice_table(advice, k_max))
    for line in res.recommendations:
        con.print(line)
    if opts.out_dir:
        path = Path(opts.out_dir) / "advise.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_clean(asdict(res)), indent=1))
        con.print(f"wrote {path}")
    return res
