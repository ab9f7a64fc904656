"""Build backends, drafters and engines from model names (what the CLI, bench and server call)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from draftwise.backends.base import Backend
from draftwise.config import SpecConfig
from draftwise.drafters.base import Drafter
from draftwise.drafters.bridge import BridgeDrafter, IdMapDrafter
from draftwise.drafters.hybrid import HybridDrafter, hybrid_base
from draftwise.drafters.model import ModelDrafter
from draftwise.drafters.ngram import NgramDrafter
from draftwise.engine import Engine
from draftwise.errors import DraftwiseError
from draftwise.models import integrity
from draftwise.models.catalog import resolve
from draftwise.pairing.decision import decide
from draftwise.pairing.meta import read_info
from draftwise.policy import make_policy

BACKENDS = ("auto", "llama.cpp", "transformers")
NO_DRAFT = ("none", "")


@dataclass(frozen=True)
class BackendOptions:
    """backend: auto picks llama.cpp for GGUF files and transformers otherwise. device (transformers:
    auto | cpu | cuda[:N]) and gpu_layers (llama.cpp: layers offloaded, -1 all) are the target's;
    draft_device / draft_gpu_layers the draft's (None: as the target). n_seq: sequences each model
    holds at once (serve --parallel; llama.cpp only), each of n_ctx positions."""

    backend: str = "auto"
    threads: int | None = None
    n_ctx: int | None = 4096
    dtype: str = "float32"  # transformers only
    device: str = "auto"
    gpu_layers: int = 0
    draft_device: str | None = None
    draft_gpu_layers: int | None = None
    n_seq: int = 1

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise DraftwiseError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.n_ctx is not None and self.n_ctx < 1:
            raise DraftwiseError(f"the context length (--ctx) must be at least 1 token, got "
                                 f"{self.n_ctx}; leave it out for the default")
        if self.threads is not None and self.threads < 1:
            raise DraftwiseError(f"the thread count (--threads) must be at least 1, got "
                                 f"{self.threads}; leave it out to use all cores")
        if self.n_seq < 1:
            raise DraftwiseError(f"--parallel must be at least 1, got {self.n_seq}")
        for name, v in (("--gpu-layers", self.gpu_layers), ("--draft-gpu-layers",
                                                             self.draft_gpu_layers)):
            if v is not None and v < -1:
                raise DraftwiseError(f"{name} takes a layer count or -1 (all), got {v}")

    def for_draft(self) -> BackendOptions:
        """The options the draft model loads with."""
        return replace(self, device=self.draft_device or self.device,
                       gpu_layers=self.gpu_layers if self.draft_gpu_layers is None
                       else self.draft_gpu_layers)


def uses_llama_cpp(name: str, backend: str = "auto") -> bool:
    """Whether `name` loads on llama.cpp (explicitly, or auto with a GGUF file)."""
    return backend == "llama.cpp" or (backend == "auto" and resolve(name).kind == "gguf")


def load_backend(name: str, opts: BackendOptions = BackendOptions()) -> Backend:
    """Load a model by catalog name, GGUF path, HF directory or hub id. A GGUF file that was
    pulled or made here must still match its recorded sha256 (integrity.check)."""
    ref = resolve(name)
    if ref.kind == "gguf":
        integrity.check(ref.ref)
    if ref.lora is not None:
        integrity.check(ref.lora)
    if uses_llama_cpp(name, opts.backend):
        if ref.kind != "gguf":
            raise DraftwiseError(f"the llama.cpp backend needs a GGUF file; {name} is a {ref.kind}"
                                 " (use --backend transformers)")
        from draftwise.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(ref.ref, n_ctx=opts.n_ctx, threads=opts.threads,
                               gpu_layers=opts.gpu_layers, n_seq=opts.n_seq, lora=ref.lora)
    if ref.lora is not None:
        raise DraftwiseError(f"{name} is a LoRA adapter that llama.cpp applies to {ref.ref}; load "
                             "it with the llama.cpp backend (or distill without --adapter for a "
                             "merged GGUF the transformers backend reads)")
    if opts.n_seq > 1:
        raise DraftwiseError(f"the transformers backend serves one sequence at a time; use "
                             f"--parallel 1 for {name}, or a GGUF model on llama.cpp")
    from draftwise.backends.transformers import TransformersBackend

    return TransformersBackend(ref.ref, dtype=opts.dtype, threads=opts.threads, n_ctx=opts.n_ctx,
                               device=opts.device)


def make_drafter(draft: str | None, target: Backend, opts: BackendOptions,
                 spec: SpecConfig) -> Drafter | None:
    """`none` -> None (autoregressive), `ngram` -> prompt lookup, `ngram+MODEL` -> hybrid,
    else a draft model, paired with the target as `draftwise check` decides."""
    if draft is None or draft.lower() in NO_DRAFT:
        return None
    if draft.lower() == "ngram":
        return NgramDrafter()
    if (base := hybrid_base(draft)) is not None:
        if base.lower() in (*NO_DRAFT, "ngram"):
            raise DraftwiseError(f"{draft}: after `ngram+` give a draft model name")
        return HybridDrafter(make_drafter(base, target, opts, spec))
    pairing = decide(read_info(target.model_path), read_info(draft))
    if not pairing.ok:
        raise DraftwiseError(f"{draft} cannot draft for {target.model_path}: {pairing.reason}")
    backend = load_backend(draft, opts.for_draft())
    n_vocab = target.vocab.n_vocab
    if pairing.tmap is None:
        return ModelDrafter(backend, n_vocab_target=n_vocab, p_min=spec.p_min)
    try:
        if pairing.verdict == "compatible":
            return IdMapDrafter(backend, pairing.tmap, n_vocab, spec.p_min)
        return BridgeDrafter(target, backend, pairing.tmap, spec.p_min)
    except BaseException:
        backend.close()
        raise


def build_engine(target: str, draft: str | None, opts: BackendOptions = BackendOptions(),
                 spec: SpecConfig = SpecConfig()) -> Engine:
    """The target and drafter by name, with the K policy `spec` asks for."""
    tgt = load_backend(target, opts)
    try:
        drafter = make_drafter(draft, tgt, opts, spec)
    except BaseException:
        tgt.close()
        raise
    return Engine(tgt, drafter, spec, make_policy(spec))


def cost_key(target: str, draft: str, opts: BackendOptions,
             devices: tuple[str, str] = ("cpu", "cpu")) -> list:
    """What adaptive K's persisted costs are kept per: the two models (files by path and size),
    backend, threads, dtype, this machine's core count, and the devices the target and the draft
    run on (Backend.device)."""

    def ident(name: str) -> str:
        try:
            ref = resolve(name)
        except DraftwiseError:  # ngram, ngram+MODEL: the name is the identity
            return name
        files = [ref.ref, *([ref.lora] if ref.lora else [])]  # an adapter model: base + adapter
        return "+".join(f"{Path(f).resolve()}:{Path(f).stat().st_size}" if Path(f).is_file()
                        else f for f in files)

    key = [ident(target), ident(draft), opts.backend, opts.threads, os.cpu_count(), opts.dtype]
    return key if devices == ("cpu", "cpu") else [*key, list(devices)]  # CPU keys as before


@contextmanager
def open_engine(target: str, draft: str | None, opts: BackendOptions = BackendOptions(),
                spec: SpecConfig = SpecConfig(), on_save_error=None) -> Iterator[Engine]:
    """build_engine, with adaptive K starting from the costs saved by earlier runs of this pairing
    and saving them again on exit (even after Ctrl-C); the backends are closed on exit.
    on_save_error(path, OSError): told when the costs cannot be written (default: ignored)."""
    from draftwise.policy.store import cost_file, load_costs, save_costs

    engine = build_engine(target, draft, opts, spec)
    path = None
    if engine.drafter is not None and spec.adaptive:
        dbe = engine.drafter.model_backend()
        devices = (engine.target.device, dbe.device if dbe is not None else "cpu")
        path = cost_file(cost_key(target, draft, opts, devices))
        load_costs(engine.policy, path)
    try:
        yield engine
    finally:
        try:
            if path is not None:
                try:
                    save_costs(engine.policy, path)
                except OSError as e:  # a read-only cache costs the next run a few rounds
                    if on_save_error:
                        on_save_error(path, e)
        finally:
            if engine.drafter is not None:
                engine.drafter.close()
            engine.target.close()
