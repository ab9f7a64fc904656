"""vLLM: `vllm serve TARGET --speculative-config '{...}'` with a draft model or n-gram lookup.

Flags and rules read from vLLM's source: vllm/config/speculative.py (SpeculativeConfig: method,
model, num_speculative_tokens, prompt_lookup_min/max, use_heterogeneous_vocab, and
verify_equal_vocab_size_if_draft_model) and the serve flags from its docs.
"""

from __future__ import annotations

import json

from draftwise.errors import DraftwiseError
from draftwise.export.common import Flag, Launch, Plan

NAME = "vllm"
MODEL_FORMAT = "hf"  # vLLM loads Hugging Face directories
CHECKED = ("vLLM main @002e77c1f0ef (vllm/config/speculative.py) and the vLLM docs v0.25.0 (the "
           "`vllm serve` flags)")
_CONFIG = "vLLM main @002e77c1f0ef: vllm/config/speculative.py"
_SERVE = ("vLLM docs v0.25.0 features/speculative_decoding/draft_model (`vllm serve ... --host "
          "--port -tp --speculative-config`)")
# Why draftwise's lossy --accept modes do not export (vllm/config/speculative.py @002e77c1f0ef).
LENIENT = ("vLLM V1 verifies losslessly only (SpeculativeConfig.rejection_sample_method: standard, "
           "block, or synthetic for benchmarks; vLLM main @002e77c1f0ef); its typical acceptance "
           "(--spec-decoding-acceptance-method typical_acceptance_sampler) left with the V0 "
           "spec-decode workers (vLLM PR #21152)")
NGRAM = {"prompt_lookup_max": 3, "prompt_lookup_min": 1}  # draftwise's NgramDrafter sizes


def check(plan: Plan, target, draft, pairing) -> list[str]:
    """Notes on how vLLM pairs the two; raises when it cannot. target/draft: ModelInfo."""
    if pairing.verdict == "incompatible":
        raise DraftwiseError(f"vLLM cannot pair {plan.target} with {plan.draft}: {pairing.reason}")
    if pairing.verdict in ("identical", "compatible") and target.n_rows == draft.n_rows:
        return []
    why = ("different tokenizers (draftwise `check`: bridged)" if pairing.verdict == "bridged"
           else f"vocabulary sizes {target.n_rows} and {draft.n_rows}")
    return [f"{why}: vLLM's draft_model refuses unequal vocab_size "
            "(verify_equal_vocab_size_if_draft_model) unless `use_heterogeneous_vocab` is set: "
            "the draft then drafts over the tokens both vocabularies share (token-level "
            "intersection, vLLM PR #38174; greedy draft sampling only). A vLLM without that "
            "option cannot serve this pair."]


def heterogeneous(notes: list[str]) -> bool:
    return any("use_heterogeneous_vocab" in n for n in notes)


def launch(plan: Plan, target_arg: str, draft_arg: str | None, name: str, host: str, port: int,
           tp: int, notes: list[str]) -> Launch:
    """The command: target_arg / draft_arg are paths relative to the export dir or hub ids."""
    if plan.is_ngram:
        cfg = {"method": "ngram", "num_speculative_tokens": plan.k, **NGRAM}
        spec_meaning = (f"n-gram prompt lookup, {plan.k} tokens per step, lookup of "
                        f"{NGRAM['prompt_lookup_min']}-{NGRAM['prompt_lookup_max']} tokens")
    else:
        cfg = {"method": "draft_model", "model": draft_arg, "num_speculative_tokens": plan.k}
        if heterogeneous(notes):
            cfg["use_heterogeneous_vocab"] = True
        spec_meaning = f"draft model {draft_arg}, {plan.k} draft tokens per step"
    argv = ["vllm", "serve", target_arg, "--served-model-name", name, "--host", host,
            "--port", str(port), "--tensor-parallel-size", str(tp),
            "--speculative-config", json.dumps(cfg)]
    flags = [
        Flag("serve MODEL", target_arg, "the target (HF directory or hub id)", _SERVE),
        Flag("--served-model-name", name, "the model name clients send", _SERVE),
        Flag("--host / --port", f"{host} / {port}", "where it listens", _SERVE),
        Flag("--tensor-parallel-size", str(tp), "GPUs the target is split over", _SERVE),
        Flag("--speculative-config", json.dumps(cfg), spec_meaning, _CONFIG),
    ]
    if plan.p_min > 0:
        notes.append(f"bench ran with --p-min {plan.p_min:g}; vLLM's draft_model has no such "
                     "cut-off: it always drafts K tokens")
    return Launch(argv, flags, notes)
