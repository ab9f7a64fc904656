"""The compatibility doctor: `check(target, draft)` compares two models and gives a verdict.

Verdicts: identical (same vocabulary: direct speculation), compatible (ordinary tokens agree; an id
map covers special, added and padding tokens), bridged (different tokenizers: text-level drafting,
vocabulary intersection when sampling), incompatible (with the reason).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field

from draftwise.errors import DraftwiseError
from draftwise.pairing.decision import Pairing, decide
from draftwise.pairing.meta import ModelInfo, read_info
from draftwise.pairing.tokens import VocabMatch

STATUSES = ("pass", "info", "warn", "fail")
GEN_PROMPT = "def fibonacci(n):"


@dataclass
class Item:
    """One line of the report: status is pass, info, warn or fail."""

    name: str
    status: str
    detail: str


@dataclass
class Rule:
    """A pairing rule from the vendors' checklist; ok is None when it cannot be told."""

    rule: str
    required: bool
    ok: bool | None


@dataclass
class Report:
    target: ModelInfo
    draft: ModelInfo
    verdict: str  # identical | compatible | bridged | incompatible
    reason: str
    items: list[Item] = field(default_factory=list)
    checklist: list[Rule] = field(default_factory=list)
    sample: str | None = None  # the draft's test generation

    @property
    def exit_code(self) -> int:
        """0 all pass, 1 some warning, 2 a failure or an incompatible pair."""
        if self.verdict == "incompatible" or any(i.status == "fail" for i in self.items):
            return 2
        return 1 if any(i.status == "warn" for i in self.items) else 0

    def to_dict(self) -> dict:
        return {"target": self.target.summary(), "draft": self.draft.summary(),
                "verdict": self.verdict, "reason": self.reason, "exit_code": self.exit_code,
                "items": [asdict(i) for i in self.items],
                "checklist": [asdict(r) for r in self.checklist], "sample": self.sample}


def check(target: str, draft: str, *, generate: bool = True) -> Report:
    """Compare two models by name (catalog, GGUF, HF dir, hub id); with `generate`, also load the
    draft and run a short greedy generation. Raises DraftwiseError if a model cannot be read."""
    t, d = read_info(target), read_info(draft)
    pairing = decide(t, d)
    vm = pairing.vocab
    items = [_tokenizer_item(t, d), _ids_item(t, d, vm), *_special_items(t, d),
             _context_item(t, d), _size_item(t, d), _family_item(t, d)]
    if vm.kind == "different":
        n_inter = len(pairing.tmap)
        items.append(Item("shared tokens", "info" if n_inter else "fail",
                          f"{n_inter} draft tokens are also target tokens "
                          f"({100 * n_inter / max(1, d.n_tokens):.0f}% of the draft's); "
                          "sampling drafts only these"))
    sample = None
    if generate:
        gen_item, sample = _generation_item(draft)
        items.append(gen_item)
    verdict, reason = _verdict(pairing, items)
    return Report(t, d, verdict, reason, items, _checklist(t, d, vm, items), sample)


def _verdict(pairing: Pairing, items: list[Item]) -> tuple[str, str]:
    """The pairing decision, unless the draft failed to generate text."""
    gen = next((i for i in items if i.name == "draft generates"), None)
    if gen is not None and gen.status == "fail":
        return "incompatible", f"the draft cannot generate text ({gen.detail}); pick another draft"
    return pairing.verdict, pairing.reason


def _tokenizer_item(t: ModelInfo, d: ModelInfo) -> Item:
    def desc(m: ModelInfo) -> str:
        pre = f"/{m.tokenizer_pre}" if m.tokenizer_pre else ""
        return f"{m.tokenizer_model}{pre}, {m.n_tokens} tokens, {m.n_rows} logits rows"

    same = (t.tokenizer_model, t.tokenizer_pre) == (d.tokenizer_model, d.tokenizer_pre)
    return Item("tokenizer", "pass" if same else "warn",
                f"target {desc(t)}; draft {desc(d)}" + ("" if same else " (different class)"))


def _ids_item(t: ModelInfo, d: ModelInfo, vm: VocabMatch) -> Item:
    head = f"{vm.n_agree} of {vm.n_ordinary} ordinary target tokens have the same id and text"
    if vm.kind == "identical":
        return Item("token ids", "pass", f"{head}; identical token lists")
    shown = "; ".join(f"id {i}: {a!r} vs {b!r}" for i, a, b in vm.mismatches[:3])
    if vm.kind == "compatible":
        bits = [head]
        if vm.padding != (0, 0):
            bits.append(f"padding rows: target {vm.padding[0]}, draft {vm.padding[1]}")
        if t.n_tokens != d.n_tokens:
            bits.append(f"token lists of {t.n_tokens} vs {d.n_tokens}")
        if vm.special_diffs:
            i, a, b = vm.special_diffs[0]
            bits.append(f"special/added tokens differ, e.g. id {i}: {a!r} vs {b!r}")
        if shown:
            bits.append(f"unmapped: {shown}")
        return Item("token ids", "pass", "; ".join(bits))
    return Item("token ids", "warn", f"{head}; e.g. {shown}" if shown else head)


def _special_items(t: ModelInfo, d: ModelInfo) -> list[Item]:
    diffs, same = [], []
    for label, a, b in (("BOS", t.bos_id, d.bos_id), ("EOS", t.eos_id, d.eos_id),
                        ("PAD", t.pad_id, d.pad_id)):
        ta, tb = t.token(a), d.token(b)
        (same if ta == tb else diffs).append(f"{label} {a}:{ta!r} vs {b}:{tb!r}" if ta != tb
                                             else f"{label} {ta!r}")
    if t.add_bos != d.add_bos:
        diffs.append(f"add-BOS {t.add_bos} vs {d.add_bos}")
    special = Item("special tokens", "warn" if diffs else "pass",
                   "; ".join(diffs) + " (handled by the drafter)" if diffs else
                   ", ".join(same) + f"; add-BOS {t.add_bos}")
    if t.chat_template == d.chat_template:
        chat = Item("chat template", "pass",
                    "equal" if t.chat_template else "neither model has one")
    elif not d.chat_template or not t.chat_template:
        chat = Item("chat template", "info",
                    f"only the {'target' if t.chat_template else 'draft'} has one; the draft "
                    "reads the target's formatted prompt")
    else:
        ratio = difflib.SequenceMatcher(None, t.chat_template, d.chat_template).ratio()
        line = next((n for n, (a, b) in enumerate(zip(t.chat_template.splitlines(),
                                                       d.chat_template.splitlines()), 1) if a != b),
                    None)
        where = f" from line {line}" if line else ""
        chat = Item("chat template", "info" if ratio > 0.95 else "warn",
                    f"the templates differ{where} ({100 * ratio:.0f}% alike); the draft reads the "
                    "target's formatted prompt")
    return [special, chat]


def _context_item(t: ModelInfo, d: ModelInfo) -> Item:
    tc, dc = t.context_length, d.context_length
    if tc is None or dc is None:
        return Item("context", "warn", f"unknown context length (target {tc}, draft {dc})")
    if dc >= tc:
        return Item("context", "pass", f"target {tc}, draft {dc} tokens")
    return Item("context", "warn", f"the draft holds {dc} tokens, the target {tc}: drafting stops "
                "past the draft's context")


def _fmt_n(n: int | None, unit: str = "") -> str:
    if n is None:
        return "?"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suf}{unit}"
    return f"{n}{unit}"


def _size_item(t: ModelInfo, d: ModelInfo) -> Item:
    txt = (f"params {_fmt_n(t.n_params)} vs {_fmt_n(d.n_params)}, files "
           f"{_fmt_n(t.file_size, 'B')} vs {_fmt_n(d.file_size, 'B')}")
    if not t.n_params or not d.n_params:
        return Item("size", "warn", txt + "; parameter count unknown")
    r = t.n_params / d.n_params
    txt += f", ratio 1:{r:.1f}"
    if r <= 1:
        return Item("size", "warn", txt + "; the draft is not smaller than the target")
    note = "" if 5 <= r <= 10 else " (typical is 1:5 to 1:10)"
    return Item("size", "pass", txt + note)


def _family_item(t: ModelInfo, d: ModelInfo) -> Item:
    same = _family(t) == _family(d)
    return Item("family", "pass" if same else "info",
                f"target {t.architecture} ({t.family}), draft {d.architecture} ({d.family})"
                + ("" if same else ": different families draft less alike"))


def _family(m: ModelInfo) -> str:
    return (m.family or m.architecture or "").lower()


def _generation_item(draft: str) -> tuple[Item, str | None]:
    """Load the draft and generate a few greedy tokens; empty or one repeated token fails."""
    from draftwise.config import GenerateConfig
    from draftwise.engine import Engine
    from draftwise.loader import BackendOptions, load_backend

    try:
        backend = load_backend(draft, BackendOptions(n_ctx=256))
    except DraftwiseError as e:
        return Item("draft generates", "fail", f"cannot load the draft: {e}"), None
    try:
        gen = Engine(backend).generate(GEN_PROMPT, GenerateConfig(max_tokens=16))
    except DraftwiseError as e:
        return Item("draft generates", "fail", f"generation failed: {e}"), None
    finally:
        backend.close()
    text, toks = gen.text, gen.tokens
    shown = repr(text[:60])
    if not text.strip():
        return Item("draft generates", "fail", f"empty output after {GEN_PROMPT!r}"), text
    if len(toks) >= 8 and len(set(toks)) <= 2:
        return Item("draft generates", "warn", f"degenerate output {shown}"), text
    return Item("draft generates", "pass", f"{GEN_PROMPT!r} -> {shown}"), text


def _checklist(t: ModelInfo, d: ModelInfo, vm: VocabMatch, items: list[Item]) -> list[Rule]:
    st = {i.name: i.status for i in items}

    def ok(name: str) -> bool | None:
        return None if name not in st else st[name] in ("pass", "info")

    smaller = None if not (t.n_params and d.n_params) else d.n_params < t.n_params
    same_ft = (None if not (t.finetune and d.finetune) else
               t.finetune.split("-")[0] == d.finetune.split("-")[0])
    return [
        Rule("maximum sequence length covers the target's", True, ok("context")),
        Rule("the draft is smaller than the target", True, smaller),
        Rule("the draft produces coherent text", True, ok("draft generates")),
        Rule("token ids identical except special tokens", True, vm.kind != "different"),
        Rule("same tokenizer class", True, ok("tokenizer")),
        Rule("same model family", False, _family(t) == _family(d)),
        Rule("same fine-tuning data", False, same_ft),
    ]
