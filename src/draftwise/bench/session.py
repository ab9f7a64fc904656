"""Load a sweep's target and drafts once; tokenize the prompts and drop those that won't fit."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from draftwise.backends.base import Backend
from draftwise.bench.drafts import load_drafter
from draftwise.bench.prompts import Prompt
from draftwise.bench.runner import PreparedPrompt
from draftwise.drafters.base import Drafter
from draftwise.drafters.hybrid import hybrid_base
from draftwise.errors import DraftwiseError
from draftwise.loader import BackendOptions, load_backend


@dataclass
class Models:
    target: Backend
    drafters: dict[str, Drafter]  # draft name -> drafter (shared by all configurations)
    opts: BackendOptions


@contextmanager
def load_models(target: str, drafts: Sequence[str], opts: BackendOptions,
                p_min: float = 0.0) -> Iterator[Models]:
    """The target backend and one drafter per draft name; all closed on exit."""
    tgt = load_backend(target, opts)
    drafters: dict[str, Drafter] = {}
    try:
        names = list(dict.fromkeys(drafts))
        for d in sorted(names, key=lambda n: hybrid_base(n) is not None):  # models before hybrids
            drafters[d] = load_drafter(d, tgt, opts, p_min, drafters)
        yield Models(tgt, {d: drafters[d] for d in names}, opts)
    finally:
        for dr in drafters.values():
            dr.close()  # closing a shared model twice is harmless
        tgt.close()


def prepare(prompts: Sequence[Prompt], models: Models, room: int
            ) -> tuple[list[PreparedPrompt], list[str]]:
    """Render and tokenize; prompts needing more than n_ctx - room positions are skipped.

    Returns (kept, skipped ids). Raises when none fits.
    """
    tgt = models.target
    n_ctx = min([tgt.n_ctx] + [be.n_ctx for d in models.drafters.values()
                                if (be := d.model_backend()) is not None])
    kept, skipped = [], []
    for p in prompts:
        try:
            text = p.render(tgt.apply_chat_template)
        except DraftwiseError as e:
            raise DraftwiseError(f"prompt {p.id} needs a chat template: {e}; give --prompts with "
                                 "{\"prompt\": ...} rows for a model without one") from None
        ids = tgt.tokenize(text)
        if not ids:
            skipped.append(p.id)
        elif len(ids) + room > n_ctx:
            skipped.append(p.id)
        else:
            kept.append(PreparedPrompt(p, ids))
    if not kept:
        raise DraftwiseError(f"no prompt fits the context of {n_ctx} tokens with {room} tokens to "
                             "generate; raise --ctx, lower --max-tokens or use shorter prompts")
    return kept, skipped


def machine_info(models: Models) -> dict:
    return {
        "platform": platform.platform(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "threads": models.opts.threads,
        "backend": models.target.name, "target_path": models.target.model_path,
        "device": models.target.device,
        "draft_devices": {name: be.device if (be := d.model_backend()) else "-"
                          for name, d in models.drafters.items()},
        "draft_paths": {name: be.weights if (be := d.model_backend()) else ""
                        for name, d in models.drafters.items()},
        "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
