"""What an export carries and where its files go.

read_plan: the recommendation of an advise.json or bench.json (or names given on the command
line) as a Plan; pair_info: both models' facts and the pairing verdict; place / hf_dir /
gguf_file: model files linked (copied across file systems) into the export directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from draftwise.errors import DraftwiseError

MIN_GAIN = 1.02  # as advise: a predicted gain under 2% is noise, not a recommendation


@dataclass(frozen=True)
class Plan:
    """One configuration to export. draft is a model name or `ngram`; k the draft length."""

    target: str
    draft: str
    k: int
    temperature: float | None = None
    p_min: float = 0.0
    source: str = "the command line"
    expected: str = ""  # what draftwise measured or predicted for it, one phrase
    notes: tuple[str, ...] = ()

    @property
    def is_ngram(self) -> bool:
        return self.draft.lower() == "ngram"


@dataclass
class Flag:
    """One engine flag in the launch command, with where it was checked."""

    flag: str
    value: str
    meaning: str
    checked: str  # engine version and source file the flag was read from


@dataclass
class Launch:
    """An engine's launch command (argv, relative to the export directory) and its flags."""

    argv: list[str]
    flags: list[Flag]
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _pick_temperature(temps: list[float], wanted: float | None, where: str) -> float:
    if not temps:
        raise DraftwiseError(f"{where} holds no recommendation")
    if wanted is None:
        return 0.0 if any(t == 0 for t in temps) else temps[0]
    for t in temps:
        if math.isclose(t, wanted, abs_tol=1e-9):
            return t
    raise DraftwiseError(f"{where} has no result at temperature {wanted:g} (it has "
                         f"{', '.join(f'{t:g}' for t in dict.fromkeys(temps))})")


def _from_advise(data: dict, where: str, temperature: float | None) -> Plan:
    advice = data.get("advice") or []
    t = _pick_temperature([float(a["temperature"]) for a in advice], temperature, where)
    best = max((a for a in advice if float(a["temperature"]) == t),
               key=lambda a: a["best_speedup"])
    if not best["best_speedup"] >= MIN_GAIN:
        raise DraftwiseError(f"{where}: at T={t:g} no draft is predicted to beat autoregressive "
                             f"decoding (best: {best['draft']} K={best['best_k']} at "
                             f"{best['best_speedup']:.2f}x); nothing to export (give --draft "
                             "and -k to export a pair anyway)")
    return Plan(data["target"], best["draft"], int(best["best_k"]), t, 0.0, f"advise ({where})",
                f"predicted speedup {best['best_speedup']:.2f}x at T={t:g} on the measuring "
                "machine")


def _from_bench(data: dict, where: str, temperature: float | None) -> Plan:
    recs = data.get("recommendations") or []
    t = _pick_temperature([float(r["temperature"]) for r in recs], temperature, where)
    rec = next(r for r in recs if float(r["temperature"]) == t)
    if not rec.get("beats_ar"):
        raise DraftwiseError(f"{where}: {rec.get('text') or 'nothing beats autoregressive'} "
                             "Nothing to export (give --draft and -k to export a pair anyway)")
    opts = data.get("options") or {}
    k, notes = rec.get("k"), ()
    if k is None:  # adaptive K won; the engines take a fixed K: the best fixed K of that draft
        fixed = [s for s in data.get("summaries") or [] if s.get("draft") == rec["draft"]
                 and float(s.get("temperature", -1)) == t and s.get("k") is not None
                 and s.get("speedup") is not None and s.get("accept", "exact") == "exact"]
        if not fixed:
            raise DraftwiseError(f"{where}: adaptive K was best and no fixed K of "
                                 f"{rec['draft']} was measured; give -k")
        best = max(fixed, key=lambda s: s["speedup"])
        k = best["k"]
        notes = (f"bench found adaptive K best ({rec['speedup']:.2f}x); the engines take a fixed "
                 f"K, so this uses K={k}, the best fixed K measured for this draft "
                 f"({best['speedup']:.2f}x)",)
    return Plan(opts.get("target") or "", rec["draft"], int(k), t,
                float(opts.get("p_min") or 0.0), f"bench ({where})",
                f"measured speedup {rec['speedup']:.2f}x (95% CI {rec['speedup_lo']:.2f}-"
                f"{rec['speedup_hi']:.2f}) at T={t:g} on the measuring machine", notes)


def read_plan(path: str | None, target: str | None = None, draft: str | None = None,
              k: int | None = None, temperature: float | None = None) -> Plan:
    """The configuration to export: a result file's recommendation, with any of target / draft /
    K given explicitly replacing its own; without a file all three are needed."""
    if path is None:
        missing = [n for n, v in (("--target", target), ("--draft", draft), ("-k", k)) if v is None]
        if missing:
            raise DraftwiseError(f"give --from advise.json|bench.json, or {', '.join(missing)} "
                                 "(the pair and K that `advise` or `bench` found best)")
        plan = Plan(target, draft, k, temperature)
    else:
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise DraftwiseError(f"{path} does not exist; give the advise.json or bench.json "
                                 "that `draftwise advise --out` or `draftwise bench` wrote") from None
        except (OSError, ValueError) as e:
            raise DraftwiseError(f"cannot read {path} as JSON ({e})") from None
        if not isinstance(data, dict):
            raise DraftwiseError(f"{path} is not an advise.json or bench.json")
        if data.get("kind") == "endpoint":
            raise DraftwiseError(f"{path} is a `bench --endpoint` report: it measures servers and "
                                 "recommends no draft; give an advise.json or a bench.json of "
                                 "`bench --target`")
        if "advice" in data and "target" in data:
            read = _from_advise
        elif "recommendations" in data and "options" in data:
            read = _from_bench
        else:
            raise DraftwiseError(f"{path} is neither an advise.json (target, advice) nor a "
                                 "bench.json (options, recommendations)")
        try:
            plan = read(data, p.name, temperature)
        except DraftwiseError:
            if draft is None or k is None:
                raise
            # The file recommends nothing, but the pair and K are given: its target is enough.
            target_of = data.get("target") or (data.get("options") or {}).get("target")
            plan = Plan(target_of or "", draft, k, temperature, source=f"{p.name} and the "
                        "command line")
        except (KeyError, TypeError, ValueError) as e:
            raise DraftwiseError(f"{path} is not a complete advise.json / bench.json "
                                 f"({type(e).__name__}: {e})") from None
        plan = Plan(target or plan.target, draft or plan.draft, k or plan.k, plan.temperature,
                    plan.p_min, plan.source,
                    plan.expected if not (target or draft or k) else "", plan.notes)
    if not 1 <= plan.k <= 32:
        raise DraftwiseError(f"K must be between 1 and 32, got {plan.k}")
    if plan.draft.lower() in ("", "none"):
        raise DraftwiseError("the recommendation is plain decoding (no draft): nothing to export")
    if plan.draft.lower().startswith("ngram+"):
        raise DraftwiseError(f"{plan.draft} is draftwise's hybrid drafter (n-gram, else the model); "
                             "no engine has it: export the model (--draft "
                             f"{plan.draft[len('ngram+'):]}) or the n-gram drafter (--draft ngram)")
    return plan


def pair_info(target: str, draft: str):
    """(target ModelInfo, draft ModelInfo, Pairing): read from the files, weights not loaded."""
    from draftwise.pairing.decision import decide
    from draftwise.pairing.meta import read_info

    t, d = read_info(target), read_info(draft)
    return t, d, decide(t, d)


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link a file or every file of a directory (no second copy of the weights); copy where
    a link is not possible (another file system)."""
    if src.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            if not child.name.startswith("."):
                link_or_copy(child, dest / child.name)
        return
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _no_adapter(name: str, engine: str):
    """resolve(name), refusing a LoRA-adapter draft: no engine applies an adapter to a draft."""
    from draftwise.models.catalog import resolve

    ref = resolve(name)
    if ref.lora is not None:
        raise DraftwiseError(f"{name} is a LoRA adapter on {Path(ref.ref).name}, and {engine} "
                             "cannot apply an adapter to a draft model; distill it without "
                             "--adapter to get one merged GGUF file")
    return ref


def hf_dir(name: str, dtype: str) -> Path | str:
    """An HF directory for `name`: as it is, or a GGUF file dequantized (once, cached); a hub id
    is returned as is (the engine downloads it)."""
    ref = _no_adapter(name, "this engine")
    if ref.kind == "hub":
        return ref.ref
    if ref.kind == "hf_dir":
        return Path(ref.ref)
    from draftwise.backends.transformers import _convert_gguf

    try:
        return _convert_gguf(Path(ref.ref), dtype)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DraftwiseError(f"converting {name} to a Hugging Face directory needs torch and "
                             f"transformers ({e.name} is missing); run `pip install "
                             "'draftwise[transformers]'`") from None


def gguf_file(name: str, engine: str) -> Path:
    """The GGUF file of `name`; engines that load GGUF only take GGUF."""
    ref = _no_adapter(name, engine)
    if ref.kind != "gguf":
        what = "hub model" if ref.kind == "hub" else "HF directory"
        raise DraftwiseError(f"{engine} loads GGUF files and {name} is an {what}; convert it with "
                             "llama.cpp's convert_hf_to_gguf.py and give the .gguf")
    return Path(ref.ref)
