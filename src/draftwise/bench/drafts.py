"""Draft names in a sweep: a model name, `ngram`, or `ngram+MODEL` (hybrid); their quantization."""

from __future__ import annotations

import re
from pathlib import Path

from draftwise.backends.base import Backend
from draftwise.config import SpecConfig
from draftwise.drafters.base import Drafter
from draftwise.drafters.hybrid import HybridDrafter, hybrid_base
from draftwise.errors import DraftwiseError
from draftwise.loader import BackendOptions, make_drafter
from draftwise.models.catalog import QUANTS, catalog, resolve
from draftwise.models.quantize import file_quant

_QUANT = re.compile(rf"(?:^|[-_.])({'|'.join(QUANTS)}|f16|bf16|f32)(?:$|[-_.])", re.I)


def load_drafter(name: str, target: Backend, opts: BackendOptions, p_min: float = 0.0,
                 loaded: dict[str, Drafter] | None = None) -> Drafter:
    """Build the drafter a sweep entry names (loads the draft model, checks its vocabulary).

    loaded: drafters built so far by name; `ngram+MODEL` reuses MODEL's drafter from it (the
    engine runs one generation at a time, and each starts by resetting its drafter).
    """
    spec = SpecConfig(p_min=p_min)
    base = hybrid_base(name)
    if base is not None and base in (loaded or {}):
        return HybridDrafter(loaded[base])
    drafter = make_drafter(name, target, opts, spec)
    if drafter is None:
        raise DraftwiseError(f"{name!r} is not a draft")
    return drafter


def quant_of(name: str) -> str:
    """The quantization of a draft: `-` for ngram, from the catalog, the name, else the GGUF
    file's header (`+lora` when an adapter rides on it); `?` when none says."""
    base = hybrid_base(name) or name
    if base.lower() == "ngram":
        return "-"
    cat = catalog()
    if base in cat:
        return cat[base].quant
    if m := _QUANT.search(Path(base).name.lower().removesuffix(".gguf")):
        return m[1]
    try:
        ref = resolve(base)
    except DraftwiseError:
        return "?"
    q = file_quant(Path(ref.ref)) if ref.kind == "gguf" else None
    return (q or "?") + ("+lora" if ref.lora else "")
