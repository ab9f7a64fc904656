"""`bench --quality`: pass@1 of AR, exact and lenient speculative decoding on tasks with checkable
answers (HumanEval in a sandbox, GSM8K-style math with exact answers)."""
