"""`draftwise distill`: a draft fine-tuned toward its target and exported to GGUF (pipeline.py)."""
