"""The model catalog (catalog.json) and resolving a model name to something loadable.

A name is a catalog entry (`qwen2.5-coder-1.5b`), a quantized variant of one made by
`models quantize` (`qwen2.5-coder-1.5b-q8_0`), a model made locally by `distill` (registry.py) or
its variant, a local GGUF file, a local HF directory or a hub id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from draftwise.errors import DraftwiseError
from draftwise.models.store import models_dir

QUANTS = ("q8_0", "q6_k", "q5_k_m", "q4_0", "q4_k_m", "q3_k_m", "q2_k")
_VARIANT = re.compile(rf"^(?P<base>.+)-(?P<quant>{'|'.join(QUANTS)})$")


@dataclass(frozen=True)
class Entry:
    """One catalog model: a GGUF file with its size, sha256 and where to get it."""

    name: str
    description: str
    file: str
    size: int
    sha256: str
    quant: str
    pypi: dict
    hf: dict

    @property
    def path(self) -> Path:
        return models_dir() / self.file


@lru_cache(maxsize=1)
def catalog() -> dict[str, Entry]:
    raw = json.loads(resources.files("draftwise.models").joinpath("catalog.json").read_text())
    return {name: Entry(name=name, **fields) for name, fields in raw.items()}


def entry(name: str) -> Entry:
    try:
        return catalog()[name]
    except KeyError:
        raise DraftwiseError(f"unknown model {name!r}; `draftwise models list` shows the catalog") \
            from None


def variant_path(base: str, quant: str) -> Path:
    """Where `models quantize BASE --to QUANT` writes its file."""
    return models_dir() / f"{base}-{quant}.gguf"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: kind is 'gguf', 'hf_dir' or 'hub'; ref is a path or a hub id; lora: a
    LoRA adapter GGUF applied on top of ref (a `distill --adapter` model), else None."""

    kind: str
    ref: str
    name: str
    lora: str | None = None


def resolve(name: str) -> ModelRef:
    """Resolve a model name to a file, directory or hub id. Raises with what to do if missing."""
    p = Path(name).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise DraftwiseError(f"{name} is not a .gguf file; give a GGUF file or an HF directory")
        return ModelRef("gguf", str(p), p.stem)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise DraftwiseError(f"{name} is a directory without config.json; not an HF model")
        return ModelRef("hf_dir", str(p), p.name)
    cat = catalog()
    if name in cat:
        e = cat[name]
        if not e.path.exists():
            raise DraftwiseError(f"model {name} is not downloaded; run `draftwise models pull {name}`")
        return ModelRef("gguf", str(e.path), name)
    m = _VARIANT.match(name)
    if m and m["base"] in cat:
        path = variant_path(m["base"], m["quant"])
        if not path.exists():
            raise DraftwiseError(f"model {name} does not exist yet; run `draftwise models quantize "
                                 f"{m['base']} --to {m['quant']}`")
        return ModelRef("gguf", str(path), name)
    if (local := _resolve_local(name)) is not None:
        return local
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.endswith(".gguf"):
        return ModelRef("hub", name, name)
    raise DraftwiseError(f"unknown model {name!r}: not a catalog name (`draftwise models list`), "
                         "a local GGUF file, an HF directory or a hub id")


def _resolve_local(name: str) -> ModelRef | None:
    """A model made locally (`draftwise distill`, models/registry.py), or a quantized variant."""
    from draftwise.models import registry

    entries = registry.load()
    m = _VARIANT.match(name)
    lora = None
    if name in entries:
        path = entries[name].path
        if (lora := entries[name].adapter_path) is not None and not lora.is_file():
            raise DraftwiseError(f"local model {name} is registered but its adapter {lora} is "
                                 "missing; make it again with `draftwise distill`")
    elif m and m["base"] in entries and (vp := entries[m["base"]].variant_path(m["quant"])):
        path = vp
    else:
        return None
    if not path.is_file():
        raise DraftwiseError(f"local model {name} is registered but {path} is missing; "
                             "make it again with `draftwise distill`")
    return ModelRef("gguf", str(path), name, str(lora) if lora else None)
