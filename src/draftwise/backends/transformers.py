"""Backend on Hugging Face transformers + PyTorch (CPU or CUDA): HF directories, hub ids, GGUF.

A GGUF file is dequantized by transformers on first load (about a minute for a 1.5B model); the
result is saved as an HF directory in the model cache so later loads take seconds. On a GPU the
weights and the KV cache stay on the device; only the logits rows a round needs come back to
numpy (one copy per forward).
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from draftwise.backends.base import Backend, VocabInfo
from draftwise.errors import DraftwiseError

DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str, cuda_count: int) -> str:
    """`auto` -> cuda when torch sees a GPU, else cpu; `cpu`, `cuda` and `cuda:N` are checked
    against the cuda_count GPUs torch sees (one line saying what to do otherwise)."""
    if device == "auto":
        return "cuda" if cuda_count else "cpu"
    if device == "cpu":
        return device
    head, _, index = device.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise DraftwiseError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not cuda_count:
        raise DraftwiseError(f"device {device} asked for, but torch sees no CUDA GPU (a CPU-only "
                             "torch build, or no driver); use --device cpu")
    if index and int(index) >= cuda_count:
        raise DraftwiseError(f"device {device} asked for, but torch sees {cuda_count} GPU(s): "
                             f"cuda:0..cuda:{cuda_count - 1}")
    return device


def _converted_dir(gguf: Path, dtype: str) -> Path:
    from draftwise.models.store import cache_dir

    st = gguf.stat()
    return cache_dir() / "hf" / f"{gguf.stem}-{st.st_size}-{dtype}"


def _convert_gguf(gguf: Path, dtype: str) -> Path:
    """Dequantize a GGUF file into an HF directory (once); returns the directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = _converted_dir(gguf, dtype)
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".convert-"))
    try:
        kw = dict(gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=getattr(torch, dtype), **kw)
        AutoTokenizer.from_pretrained(gguf.parent, **kw).save_pretrained(tmp)
        # The weights are already dequantized; drop the GGUF "quantizer" so the model saves as a
        # plain checkpoint (transformers refuses to serialize a GGUF-quantized model).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, source: str, dtype: str = "float32", threads: int | None = None,
                 n_ctx: int | None = None, device: str = "cpu"):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
        except ImportError as e:  # pragma: no cover - depends on the install
            raise DraftwiseError(
                f"the transformers backend needs torch and transformers ({e.name} is missing); "
                "run `pip install 'draftwise[transformers]'`") from e
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        if dtype not in DTYPES:
            raise DraftwiseError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device, torch.cuda.device_count())
        self._torch, self._Cache = torch, DynamicCache
        self.model_path = source
        path = Path(source)
        if path.suffix == ".gguf" and path.is_file():
            path = _convert_gguf(path, dtype)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
            self.tok = AutoTokenizer.from_pretrained(str(path))
        except OSError as e:
            raise DraftwiseError(
                f"cannot load {source!r} with transformers: {str(e).splitlines()[0]} "
                "(offline? give a local GGUF file or HF directory)") from e
        self.model.to(self.device).eval()
        # transformers >= 5.2x names the KV cache argument `cache`; earlier 5.x `past_key_values`.
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        cfg = self.model.config
        max_pos = getattr(cfg, "max_position_embeddings", None) or 4096
        self.n_ctx = min(n_ctx, max_pos) if n_ctx else max_pos
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) | {self.tok.eos_token_id}
        self.vocab = VocabInfo(
            n_vocab=self.model.get_output_embeddings().weight.shape[0],
            n_tokens=len(self.tok),
            bos_id=self.tok.bos_token_id,
            eos_ids=frozenset(e for e in eos if e is not None),
            add_bos=bool(self.tokenize("a") and self.tokenize("a")[0] == self.tok.bos_token_id),
        )
        self._cache = DynamicCache()
        self._n_past = 0

    @property
    def n_past(self) -> int:
        return self._n_past

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return list(self.tok(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        return self.tok.convert_ids_to_tokens(int(token_id)) or ""

    def apply_chat_template(self, messages: list[dict]) -> str:
        if not self.tok.chat_template:
            raise DraftwiseError(f"{self.model_path} has no chat template; drop --chat")
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _forward(self, tokens: Sequence[int], n_logits: int) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=max(n_logits, 1),
                             **{self._cache_arg: self._cache})
        self._n_past += len(tokens)
        if n_logits == 0:
            return np.empty((0, self.vocab.n_vocab), dtype=np.float32)
        return out.logits[0, -n_logits:].float().cpu().numpy()

    def rollback(self, n_keep: int) -> None:
        if n_keep == 0:
            self._cache = self._Cache()
        elif n_keep < self._n_past:
            self._cache.crop(n_keep - self._n_past)  # transformers 5: a negative count to drop
        self._n_past = min(self._n_past, n_keep)
