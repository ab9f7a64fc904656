"""Build backends, drafters and engines from model names (what the CLI and the server call)."""

from __future__ import annotations

from dataclasses import dataclass

from draftwise.backends.base import Backend
from draftwise.config import SpecConfig
from draftwise.controller import KPolicy, make_policy
from draftwise.drafters.base import Drafter
from draftwise.drafters.hybrid import HybridDrafter, hybrid_base
from draftwise.drafters.model import ModelDrafter
from draftwise.drafters.ngram import NgramDrafter
from draftwise.engine import Engine
from draftwise.errors import DraftwiseError
from draftwise.models.catalog import resolve
from draftwise.pairing.vocab import compare_vocab

BACKENDS = ("auto", "llama.cpp", "transformers")
NO_DRAFT = ("none", "")


@dataclass(frozen=True)
class BackendOptions:
    """backend: auto picks llama.cpp for GGUF files and transformers otherwise."""

    backend: str = "auto"
    threads: int | None = None
    n_ctx: int | None = 4096
    dtype: str = "float32"  # transformers only

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise DraftwiseError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


def load_backend(name: str, opts: BackendOptions = BackendOptions()) -> Backend:
    """Load a model by catalog name, GGUF path, HF directory or hub id."""
    ref = resolve(name)
    kind = opts.backend
    if kind == "auto":
        kind = "llama.cpp" if ref.kind == "gguf" else "transformers"
    if kind == "llama.cpp":
        if ref.kind != "gguf":
            raise DraftwiseError(f"the llama.cpp backend needs a GGUF file; {name} is a {ref.kind}"
                                 " (use --backend transformers)")
        from draftwise.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(ref.ref, n_ctx=opts.n_ctx, threads=opts.threads)
    from draftwise.backends.transformers import TransformersBackend

    return TransformersBackend(ref.ref, dtype=opts.dtype, threads=opts.threads, n_ctx=opts.n_ctx)


def make_drafter(draft: str | None, target: Backend, opts: BackendOptions,
                 spec: SpecConfig) -> Drafter | None:
    """`none` -> None (autoregressive), `ngram` -> prompt lookup, `ngram+MODEL` -> hybrid,
    else a draft model."""
    if draft is None or draft.lower() in NO_DRAFT:
        return None
    if draft.lower() == "ngram":
        return NgramDrafter()
    if (base := hybrid_base(draft)) is not None:
        if base.lower() in (*NO_DRAFT, "ngram"):
            raise DraftwiseError(f"{draft}: after `ngram+` give a draft model name")
        return HybridDrafter(make_drafter(base, target, opts, spec))
    backend = load_backend(draft, opts)
    diff = compare_vocab(target, backend)
    if not diff.identical_tokens:  # an id map or a tokenizer bridge (see `draftwise check`)
        from draftwise.drafters.bridge import pair_drafter

        try:
            return pair_drafter(target, backend, p_min=spec.p_min)
        except BaseException:
            backend.close()
            raise
    return ModelDrafter(backend, n_vocab_target=target.vocab.n_vocab, p_min=spec.p_min)


def build_engine(target: str, draft: str | None, opts: BackendOptions = BackendOptions(),
                 spec: SpecConfig = SpecConfig(), policy: KPolicy | None = None) -> Engine:
    """With adaptive K, the policy starts from the state saved by earlier runs of this pairing,
    and engine.cost_file says where to save it (costs.save_costs)."""
    tgt = load_backend(target, opts)
    try:
        drafter = make_drafter(draft, tgt, opts, spec)
    except BaseException:
        tgt.close()
        raise
    engine = Engine(tgt, drafter, spec, policy or make_policy(spec))
    if drafter is not None and spec.adaptive:
        from draftwise.costs import cost_file, load_costs

        engine.cost_file = cost_file(target, draft, opts.backend, opts.threads, opts.dtype)
        load_costs(engine.policy, engine.cost_file)
    return engine
