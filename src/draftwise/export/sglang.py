"""SGLang: `python3 -m sglang.launch_server` with STANDALONE (a small draft model) or NGRAM.

Flags read from SGLang's source, python/sglang/srt/server_args.py (speculative_algorithm with
its builtins, speculative_draft_model_path, speculative_num_steps, speculative_eagle_topk,
speculative_num_draft_tokens, enable_metrics; flags are the field names with dashes), and
docs/advanced_features/speculative_decoding.md (STANDALONE; "if topk=1, num_draft_tokens is
adjusted to num_steps + 1"). server_args.py has no cross-vocabulary option.
"""

from __future__ import annotations

from draftwise.errors import DraftwiseError
from draftwise.export.common import Flag, Launch, Plan

NAME = "sglang"
MODEL_FORMAT = "hf"  # SGLang loads Hugging Face directories
CHECKED = ("SGLang main @001067fffe33 (python/sglang/srt/server_args.py) and its docs "
           "@067ad4d335bb (advanced_features/speculative_decoding.md)")
_ARGS = "SGLang main @001067fffe33: python/sglang/srt/server_args.py"
_DOCS = "SGLang docs/advanced_features/speculative_decoding.md @067ad4d335bb"
# Why draftwise's lossy --accept modes do not export: SGLang's own lenient rule is another one.
LENIENT = ("SGLang's lenient flags (--speculative-accept-threshold-single S, "
           "--speculative-accept-threshold-acc A; SGLang main @001067fffe33 server_args.py) keep a "
           "draft token whose target probability exceeds S, or with probability min(1, p / A), "
           "and only when sampling (greedy requests verify exactly); no draftwise mode is that "
           "rule (ratio is relative to max p, typical depends on the entropy, topk is greedy)")


def check(plan: Plan, target, draft, pairing) -> list[str]:
    """Notes on how SGLang pairs the two; raises when it cannot. target/draft: ModelInfo."""
    if pairing.verdict in ("identical", "compatible") and target.n_rows == draft.n_rows:
        return []
    why = ("the two have different tokenizers (draftwise `check`: bridged)"
           if pairing.verdict == "bridged" else
           f"the vocabulary sizes differ ({target.n_rows} and {draft.n_rows})"
           if pairing.verdict == "compatible" else pairing.reason)
    raise DraftwiseError(f"SGLang cannot speculate with {plan.draft} for {plan.target}: {why}, and "
                         "its STANDALONE drafting needs the target's vocabulary (no "
                         "cross-vocabulary option in server_args.py); pick a draft with the "
                         "target's tokenizer, or export to vllm (use_heterogeneous_vocab)")


def launch(plan: Plan, target_arg: str, draft_arg: str | None, name: str, host: str, port: int,
           tp: int, notes: list[str]) -> Launch:
    """The command: target_arg / draft_arg are paths relative to the export dir or hub ids."""
    argv = ["python3", "-m", "sglang.launch_server", "--model-path", target_arg,
            "--served-model-name", name, "--host", host, "--port", str(port),
            "--tp-size", str(tp), "--enable-metrics"]
    flags = [
        Flag("--model-path", target_arg, "the target (HF directory or hub id)", _ARGS),
        Flag("--served-model-name", name, "the model name clients send", _ARGS),
        Flag("--host / --port", f"{host} / {port}", "where it listens", _ARGS),
        Flag("--tp-size", str(tp), "GPUs the target is split over", _ARGS),
        Flag("--enable-metrics", "", "/metrics with sglang:spec_accept_rate, spec_accept_length",
             _ARGS),
    ]
    if plan.is_ngram:
        argv += ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", str(plan.k)]
        flags += [Flag("--speculative-algorithm", "NGRAM", "n-gram drafting, no draft model",
                       _DOCS),
                  Flag("--speculative-num-draft-tokens", str(plan.k), "draft tokens per step",
                       _ARGS)]
        notes.append("SGLang's NGRAM is CUDA only and drafts a tree from a cache of earlier "
                     "tokens, not draftwise's prompt lookup: measure it there with "
                     "`draftwise bench --endpoint`")
    else:
        # A chain of K draft tokens: K steps, one candidate per step, K + 1 verified tokens.
        argv += ["--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path",
                 draft_arg, "--speculative-num-steps", str(plan.k), "--speculative-eagle-topk",
                 "1", "--speculative-num-draft-tokens", str(plan.k + 1)]
        flags += [
            Flag("--speculative-algorithm", "STANDALONE", "a separate small draft model", _DOCS),
            Flag("--speculative-draft-model-path", draft_arg, "the draft", _ARGS),
            Flag("--speculative-num-steps", str(plan.k), "draft tokens per round (K)", _ARGS),
            Flag("--speculative-eagle-topk", "1", "one candidate per step: a chain, as draftwise",
                 _ARGS),
            Flag("--speculative-num-draft-tokens", str(plan.k + 1),
                 "tokens verified per round: K + 1 when topk is 1", _DOCS),
        ]
    if plan.p_min > 0:
        notes.append(f"bench ran with --p-min {plan.p_min:g}; SGLang's STANDALONE has no such "
                     "cut-off")
    return Launch(argv, flags, notes)
