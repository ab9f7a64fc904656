"""Can two models pair? Vocabulary comparison, the compatibility doctor, cross-tokenizer drafting.

ggufmeta: fast GGUF header reader; meta: ModelInfo from GGUF / HF dir / hub id; tokens: vocabulary
comparison and token maps; report: `check(target, draft) -> Report`; render: `run_check` (CLI).
The drafters that use the maps are in draftwise.drafters.bridge.
"""
