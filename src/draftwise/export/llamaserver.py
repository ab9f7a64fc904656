"""llama-server (llama.cpp): `llama-server -m T -md D --spec-type draft-simple --spec-draft-n-max K`.

Flags read from the llama.cpp that draftwise builds (vendored in llama-cpp-python 0.3.36):
common/arg.cpp (-m, -md/--spec-draft-model, --spec-type, --spec-draft-n-max, --spec-draft-p-min,
--spec-ngram-simple-size-m, -np, --metrics, -a, --host, --port), common/speculative.cpp (the
type names, and common_speculative_are_compatible: the vocabulary rule reproduced in
`vocab_problem`), tools/server/server-task.cpp (the llamacpp:spec_decode_* metrics).
"""

from __future__ import annotations

from draftwise.errors import DraftwiseError
from draftwise.export.common import Flag, Launch, Plan

NAME = "llama-server"
MODEL_FORMAT = "gguf"
CHECKED = ("llama.cpp ggml-org/llama.cpp@0c1e57098 (vendored in llama-cpp-python 0.3.36, the "
           "version draftwise builds)")
_ARG = f"{CHECKED}: common/arg.cpp"
_SPEC = f"{CHECKED}: common/speculative.cpp"
# common/speculative.cpp: SPEC_VOCAB_MAX_SIZE_DIFFERENCE, SPEC_VOCAB_CHECK_START_TOKEN_ID
MAX_SIZE_DIFFERENCE = 128
CHECK_START_TOKEN_ID = 5
# Why draftwise's lossy --accept modes do not export.
LENIENT = ("llama-server keeps a draft token only if it equals the target's sampled token "
           "(common_sampler_sample_and_accept_n, common/sampling.cpp) and common/arg.cpp has no "
           "lenient acceptance option (--spec-draft-p-min and --spec-draft-p-split shape drafting, "
           f"not acceptance; {CHECKED})")


def vocab_problem(target, draft) -> str | None:
    """Why llama.cpp would refuse this draft, or None: common_speculative_are_compatible on the
    GGUF metadata (vocabulary type, BOS, sizes within 128, token texts equal from id 5 on).
    The add-EOS rule is not repeated: GGUF chat models do not set add_eos_token."""
    if target.tokenizer_model != draft.tokenizer_model:
        return (f"vocabulary types differ ({target.tokenizer_model} vs {draft.tokenizer_model})")
    if bool(target.add_bos) != bool(draft.add_bos) or (target.add_bos
                                                       and target.bos_id != draft.bos_id):
        return (f"BOS handling differs (add {target.add_bos} id {target.bos_id} vs add "
                f"{draft.add_bos} id {draft.bos_id})")
    if abs(target.n_tokens - draft.n_tokens) > MAX_SIZE_DIFFERENCE:
        return (f"vocabulary sizes {target.n_tokens} and {draft.n_tokens} differ by more than "
                f"{MAX_SIZE_DIFFERENCE}")
    for i in range(CHECK_START_TOKEN_ID, min(target.n_tokens, draft.n_tokens)):
        if target.tokens[i] != draft.tokens[i]:
            return f"token {i} differs ({target.tokens[i]!r} vs {draft.tokens[i]!r})"
    return None


def check(plan: Plan, target, draft, pairing) -> list[str]:
    """Notes on how llama-server pairs the two; raises when it cannot. target/draft: ModelInfo."""
    problem = vocab_problem(target, draft)
    if problem is None:
        return []
    verdict = f" (draftwise `check`: {pairing.verdict})" if pairing.verdict != "identical" else ""
    raise DraftwiseError(f"llama-server cannot speculate with {plan.draft} for {plan.target}{verdict}: "
                         f"{problem}, and llama.cpp refuses such a draft (\"the target and draft "
                         "vocabs are not compatible\"); pick a draft with the target's tokenizer, "
                         "or serve the pair with `draftwise serve`")


def launch(plan: Plan, target_arg: str, draft_arg: str | None, name: str, host: str, port: int,
           parallel: int, notes: list[str]) -> Launch:
    """The command: target_arg / draft_arg are GGUF paths relative to the export directory."""
    argv = ["llama-server", "-m", target_arg]
    flags = [Flag("-m", target_arg, "the target GGUF", _ARG)]
    if plan.is_ngram:
        argv += ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-m", str(plan.k)]
        flags += [Flag("--spec-type", "ngram-simple", "n-gram lookup in the context, no draft "
                       "model", _SPEC),
                  Flag("--spec-ngram-simple-size-m", str(plan.k), "draft tokens per round (K)",
                       _ARG)]
    else:
        argv += ["-md", draft_arg, "--spec-type", "draft-simple", "--spec-draft-n-max",
                 str(plan.k)]
        flags += [Flag("-md", draft_arg, "the draft GGUF (--spec-draft-model)", _ARG),
                  Flag("--spec-type", "draft-simple", "draft with a separate model", _SPEC),
                  Flag("--spec-draft-n-max", str(plan.k), "draft tokens per round (K)", _ARG)]
        if plan.p_min > 0:
            argv += ["--spec-draft-p-min", f"{plan.p_min:g}"]
            flags.append(Flag("--spec-draft-p-min", f"{plan.p_min:g}", "stop drafting below this "
                              "draft probability (as draftwise --p-min)", _ARG))
    argv += ["-np", str(parallel), "--metrics", "-a", name, "--host", host, "--port", str(port)]
    flags += [
        Flag("-np", str(parallel), "server slots: requests decoded together", _ARG),
        Flag("--metrics", "", "/metrics with llamacpp:spec_decode_* counters", _ARG),
        Flag("-a", name, "the model name clients send (--alias)", _ARG),
        Flag("--host / --port", f"{host} / {port}", "where it listens", _ARG),
    ]
    notes.append("--spec-draft-n-max is the most tokens a round drafts (fewer when the draft's "
                 "top probability falls below --spec-draft-p-min); draftwise's adaptive K has no "
                 "llama-server equivalent, so this is the best fixed K")
    return Launch(argv, flags, notes)
