"""Local models made on this machine (`draftwise distill`), kept in <cache>/models/local.json.

Each entry names a GGUF file in the models directory, the model it was made from (parent), the
target it was made for, and how (recipe); quantized variants made alongside it are listed by
quantization. A model made as a LoRA adapter (`distill --adapter`) names its base file (the
parent at the quantization it was trained on) and the adapter file; llama.cpp applies one on the
other. catalog.resolve() looks names up here, so every command takes them by name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from draftwise.errors import DraftwiseError
from draftwise.files import write_json
from draftwise.models.store import models_dir


@dataclass(frozen=True)
class LocalModel:
    """name -> models_dir()/file (+ models_dir()/adapter, a LoRA GGUF, when set); variants: quant
    -> file."""

    name: str
    file: str
    parent: str
    target: str
    recipe: str
    created: str
    variants: dict[str, str] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    adapter: str | None = None

    @property
    def path(self) -> Path:
        return models_dir() / self.file

    @property
    def adapter_path(self) -> Path | None:
        return models_dir() / self.adapter if self.adapter else None

    def variant_path(self, quant: str) -> Path | None:
        f = self.variants.get(quant)
        return models_dir() / f if f else None


def registry_file() -> Path:
    return models_dir() / "local.json"


def load() -> dict[str, LocalModel]:
    """All local models (an unreadable registry is an error, not an empty one)."""
    f = registry_file()
    if not f.is_file():
        return {}
    try:
        raw = json.loads(f.read_text())
        return {name: LocalModel(name=name, **{k: v for k, v in e.items() if k != "name"})
                for name, e in raw.items()}
    except (ValueError, TypeError) as e:
        raise DraftwiseError(f"{f} is corrupt ({e}); fix or delete it") from None


def get(name: str) -> LocalModel | None:
    return load().get(name)


def _save(entries: dict[str, LocalModel]) -> None:
    write_json(registry_file(), {n: {k: v for k, v in asdict(e).items() if k != "name"}
                                 for n, e in entries.items()})


def register(entry: LocalModel) -> None:
    """Add or replace an entry (written atomically)."""
    entries = load()
    entries[entry.name] = entry
    _save(entries)


def remove(name: str, keep: frozenset[str] = frozenset()) -> list[Path]:
    """Unregister a local model and delete the files only it uses (its merged GGUF or adapter,
    its variants); a file another local model names, or one in `keep` (catalog files: an
    adapter model's base), stays. Returns the deleted paths."""
    entries = load()
    e = entries.pop(name, None)
    if e is None:
        raise DraftwiseError(f"{name} is not a local model (one made by distill); `draftwise "
                             "models list` shows the local models")
    used = {f for o in entries.values() for f in (o.file, o.adapter, *o.variants.values()) if f}
    own = [f for f in dict.fromkeys((e.file, e.adapter, *e.variants.values()))
           if f and f not in used and f not in keep]
    _save(entries)  # first: a model half-deleted is never left registered
    gone = [models_dir() / f for f in own if (models_dir() / f).is_file()]
    for path in gone:
        path.unlink()
    return gone
