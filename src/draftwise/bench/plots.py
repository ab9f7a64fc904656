"""The report's plots as PNG bytes (matplotlib's object API and Agg canvas: no pyplot state)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from draftwise.bench.summary import ConfigSummary


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _series_name(s: ConfigSummary, temps: set[float]) -> str:
    return s.series if len(temps) == 1 else f"{s.series} T={s.temperature:g}"


def _groups(summaries: list[ConfigSummary]) -> dict[str, list[ConfigSummary]]:
    """Non-AR summaries by series (draft, plus temperature when several)."""
    temps = {s.temperature for s in summaries}
    out: dict[str, list[ConfigSummary]] = {}
    for s in summaries:
        if not s.is_ar:
            out.setdefault(_series_name(s, temps), []).append(s)
    return out


def speedup_vs_k(summaries: list[ConfigSummary]) -> bytes:
    """Speedup over AR (95% CI bars) against K, a line per draft (and lossy mode) and a panel per
    temperature; adaptive K as a dashed level."""
    temps = list(dict.fromkeys(s.temperature for s in summaries))
    fig = Figure(figsize=(7 * len(temps), 4.2))
    axes = fig.subplots(1, len(temps), sharey=True, squeeze=False)[0]
    drafts = list(dict.fromkeys(s.series for s in summaries if not s.is_ar))
    for ax, t in zip(axes, temps):
        for s_draft in drafts:
            color = f"C{drafts.index(s_draft) % 10}"
            group = [s for s in summaries if s.series == s_draft and s.temperature == t]
            fixed = sorted((s for s in group if s.k is not None), key=lambda s: s.k)
            if fixed:
                y = np.array([s.speedup for s in fixed])
                err = np.array([[s.speedup - s.speedup_lo for s in fixed],
                                [s.speedup_hi - s.speedup for s in fixed]]).clip(min=0)
                ax.errorbar([s.k for s in fixed], y, yerr=err, marker="o", capsize=3,
                            color=color, label=s_draft)
            for s in group:
                if s.k is None:
                    ax.axhline(s.speedup, color=color, ls="--", lw=1,
                               label=f"{s_draft} adaptive ({s.speedup:.2f}x)")
        ax.axhline(1.0, color="black", lw=1, ls=":", label="autoregressive")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("K (draft tokens per round)")
        ax.set_title(f"T = {t:g}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("speedup over autoregressive (95% CI)")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("Speedup vs K")
    return _png(fig)


def _pool(points) -> dict[int, float]:
    """[(x, acceptance, n)] -> {x: pooled acceptance}."""
    acc: dict[int, list[float]] = {}
    for x, a, n in points:
        v = acc.setdefault(x, [0.0, 0.0])
        v[0] += a * n
        v[1] += n
    return {x: a / n for x, (a, n) in sorted(acc.items()) if n}


def acceptance_vs_context(summaries: list[ConfigSummary]) -> bytes:
    """Left: acceptance vs tokens generated so far; right: per prompt vs prompt length. All K of a
    draft pooled (positions reached add up)."""
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for i, (name, group) in enumerate(_groups(summaries).items()):
        color = f"C{i % 10}"
        pos = _pool(p for s in group for p in s.by_position)
        if pos:
            ax1.plot(list(pos), list(pos.values()), marker="o", color=color, label=name)
        per = _pool(p for s in group for p in s.by_prompt_len)
        if per:
            ax2.plot(list(per), list(per.values()), marker="o", ls="", alpha=0.7, color=color,
                     label=name)
    ax1.set_xlabel("tokens generated so far (bin start)")
    ax2.set_xlabel("prompt length (tokens)")
    for ax in (ax1, ax2):
        ax.set_ylabel("acceptance (accepted / positions reached)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    if ax1.has_data():
        ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("Acceptance vs context length")
    return _png(fig)


def acceptance_per_position(summaries: list[ConfigSummary]) -> bytes:
    """P(draft position i accepted | earlier ones accepted), per draft at its largest fixed K."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for i, (name, group) in enumerate(_groups(summaries).items()):
        fixed = [s for s in group if s.k is not None and s.acceptance_at]
        if fixed:
            s = max(fixed, key=lambda s: s.k)
            ax.plot(range(1, len(s.acceptance_at) + 1), s.acceptance_at, marker="o",
                    color=f"C{i % 10}", label=f"{name} (K={s.k})")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("draft position")
    ax.set_ylabel("acceptance given the earlier positions accepted")
    ax.set_ylim(0, 1.02)
    ax.set_title("Acceptance per draft position")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=8)
    return _png(fig)


def time_split(summaries: list[ConfigSummary]) -> bytes:
    """Stacked bars: draft / verify (target) / overhead milliseconds per generated token."""
    fig = Figure(figsize=(8, 0.9 + 0.28 * len(summaries)))
    ax = fig.add_subplot()
    temps = {s.temperature for s in summaries}
    labels = [s.label if len(temps) == 1 else f"{s.label} T={s.temperature:g}" for s in summaries]
    y = np.arange(len(summaries))
    left = np.zeros(len(summaries))
    for attr, name, color in (("ms_draft", "draft", "C1"), ("ms_target", "verify (target)", "C0"),
                              ("ms_overhead", "overhead", "C7")):
        v = np.array([getattr(s, attr) for s in summaries])
        ax.barh(y, v, left=left, color=color, label=name)
        left += v
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per generated token")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=8)
    return _png(fig)


PLOTS = {
    "speedup_vs_k": speedup_vs_k,
    "acceptance_vs_context": acceptance_vs_context,
    "acceptance_per_position": acceptance_per_position,
    "time_split": time_split,
}
