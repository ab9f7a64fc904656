"""Can two models pair? Vocabulary comparison, the compatibility doctor, cross-tokenizer drafting."""
