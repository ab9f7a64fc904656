"""Can two models pair? Model facts from files, vocabulary comparison, the pairing decision.

ggufmeta: fast GGUF header reader; meta: ModelInfo from GGUF / HF dir / hub id; tokens: vocabulary
comparison and token maps; decision: `decide(target, draft) -> Pairing` (the verdict and map that
`check` reports and the loader builds a drafter from). The drafters that use the maps are in
draftwise.drafters.bridge; the `check` report is draftwise.doctor.
"""
