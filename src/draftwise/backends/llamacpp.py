"""Backend on llama.cpp through llama-cpp-python's low-level C API.

One context holds n_seq sequences in a unified KV cache (n_seq x n_ctx cells, shared, so that a
batch mixing a long prompt chunk and one-token feeds stays one ubatch). A call is one
`llama_batch` (split only past n_batch tokens) whose tokens carry their sequence and position,
with a logits flag on exactly the positions asked for; logits are read as a zero-copy numpy view
of llama.cpp's output buffer; rollback is `llama_memory_seq_rm` of one sequence. A LoRA adapter
GGUF (`lora`) is applied on top of the model's own weights in every forward.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from draftwise.backends.base import Backend, Feed, VocabInfo
from draftwise.errors import DraftwiseError

_N_BATCH = 512


_quiet_log = None  # the ctypes callback must outlive every call into llama.cpp


def load_llama_cpp():
    """The llama_cpp module, its log silenced unless DRAFTWISE_VERBOSE is set."""
    global _quiet_log
    try:
        import llama_cpp
        from llama_cpp import _logger
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DraftwiseError("the llama.cpp backend needs llama-cpp-python; run "
                             "`pip install 'draftwise[llamacpp]'` (see the README for build flags)") \
            from e
    if os.environ.get("DRAFTWISE_VERBOSE"):
        _logger.set_verbose(True)
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    else:
        # llama-cpp-python's own callback maps ggml's log levels with an old enum (WARN=2, while
        # ggml now has WARN=3, its ERROR), so warnings such as "control-looking token" printed
        # even when not verbose. Our errors say what went wrong; llama.cpp's log stays silent.
        if _quiet_log is None:
            _quiet_log = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p(0))
    return llama_cpp


class LlamaCppBackend(Backend):
    name = "llama.cpp"

    def __init__(self, path: str, n_ctx: int | None = 4096, threads: int | None = None,
                 repack: bool = True, gpu_layers: int = 0, n_seq: int = 1,
                 lora: str | None = None):
        """n_ctx: positions per sequence; gpu_layers: layers offloaded to the GPU (-1: all), needs
        a GPU build of llama.cpp; n_seq: sequences held at once (batched serving); lora: a LoRA
        adapter GGUF for this model (`distill --adapter`)."""
        L = self._L = load_llama_cpp()
        self.model_path = path
        if not Path(path).is_file():
            raise DraftwiseError(f"no such GGUF file: {path}")
        L.llama_backend_init()
        if gpu_layers and not L.llama_supports_gpu_offload():
            raise DraftwiseError("GPU layers asked for, but this llama-cpp-python build has no GPU "
                                 "support; rebuild it: make install LLAMA_CMAKE_ARGS=\"-DGGML_CUDA=on\""
                                 " (see the README), or leave out --gpu-layers")
        self.device = "cpu" if not gpu_layers else f"gpu:{'all' if gpu_layers < 0 else gpu_layers}"
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = gpu_layers if gpu_layers >= 0 else 2**31 - 1
        # Repacked weights (ggml's "extra buffer types") are faster, but batches of 4+ tokens then
        # take another GEMM kernel than one token, so their logits differ slightly (Q4_K here).
        mp.use_extra_bufts = repack
        self._model = L.llama_model_load_from_file(path.encode(), mp)
        if not self._model:
            raise DraftwiseError(f"llama.cpp could not load {path}: not a valid GGUF language model")
        self._vocab = L.llama_model_get_vocab(self._model)
        n_train = L.llama_model_n_ctx_train(self._model)
        self.n_ctx = min(n_ctx, n_train) if n_ctx else n_train
        self.n_seq = n_seq
        threads = threads or os.cpu_count() or 1
        cp = L.llama_context_default_params()
        cp.n_ctx = self.n_ctx * n_seq
        cp.n_batch = cp.n_ubatch = min(_N_BATCH, cp.n_ctx)
        cp.n_seq_max = n_seq
        cp.kv_unified = True
        cp.n_threads = cp.n_threads_batch = threads
        cp.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cp)
        if not self._ctx:
            L.llama_model_free(self._model)
            raise DraftwiseError(f"llama.cpp could not create a context of {self.n_ctx} for {path}")
        if lora is not None:
            self._apply_lora(lora)
            self.adapter_path = lora
        self._mem = L.llama_get_memory(self._ctx)
        self._n_batch = cp.n_batch
        self._batch = L.llama_batch_init(self._n_batch, 0, 1)
        for i in range(self._n_batch):  # each token belongs to one sequence
            self._batch.n_seq_id[i] = 1
        self._past = [0] * n_seq
        n_vocab = L.llama_vocab_n_tokens(self._vocab)
        eog = frozenset(i for i in range(n_vocab) if L.llama_vocab_is_eog(self._vocab, i))
        bos = L.llama_vocab_bos(self._vocab)
        self.vocab = VocabInfo(n_vocab=n_vocab, n_tokens=n_vocab, bos_id=bos if bos >= 0 else None,
                               eos_ids=eog, add_bos=bool(L.llama_vocab_get_add_bos(self._vocab)))

    def _apply_lora(self, path: str) -> None:
        """Load the adapter (freed with the model) and set it on the context at scale 1."""
        L = self._L
        adapter = L.llama_adapter_lora_init(self._model, path.encode()) \
            if Path(path).is_file() else None
        if not adapter or L.llama_set_adapters_lora(
                self._ctx, (L.llama_adapter_lora_p_ctypes * 1)(adapter), 1,
                (ctypes.c_float * 1)(1.0)) != 0:
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            self._ctx = None
            raise DraftwiseError(f"llama.cpp could not apply the LoRA adapter {path} to "
                                 f"{self.model_path}: missing, or made for another model")

    @property
    def n_past(self) -> int:
        return self._past[0]

    def seq_past(self, seq: int) -> int:
        return self._past[seq]

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None."""
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        raw = text.encode("utf-8")
        n_max = len(raw) + 8
        out = (self._L.llama_token * n_max)()
        n = self._L.llama_tokenize(self._vocab, raw, len(raw), out, n_max, add_special, True)
        if n < 0:
            raise DraftwiseError(f"tokenization failed ({n}) for a text of {len(raw)} bytes")
        return list(out[:n])

    def detokenize(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        arr = (self._L.llama_token * len(ids))(*ids)
        size = 8 * len(ids) + 32
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = self._L.llama_detokenize(self._vocab, arr, len(ids), buf, size, True, False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n + 1
        raise DraftwiseError("detokenization failed")

    def token_text(self, token_id: int) -> str:
        raw = self._L.llama_vocab_get_text(self._vocab, int(token_id))
        return raw.decode("utf-8", errors="replace") if raw else ""

    def apply_chat_template(self, messages: list[dict]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.meta("tokenizer.chat_template")
        if not template:
            raise DraftwiseError(f"{self.model_path} has no chat template; drop --chat")
        tok = lambda i: self.token_text(i) if i is not None and i >= 0 else ""  # noqa: E731
        eos = self._L.llama_vocab_eos(self._vocab)
        fmt = Jinja2ChatFormatter(template, eos_token=tok(eos), bos_token=tok(self.vocab.bos_id),
                                  add_generation_prompt=True)
        return fmt(messages=messages).prompt

    def _forward(self, tokens: Sequence[int], n_logits: int) -> np.ndarray:
        return self._forward_many([Feed(0, tokens, n_logits)])[0]

    def _forward_many(self, feeds: Sequence[Feed]) -> list[np.ndarray]:
        # (feed index or -1, seq, position, token) of every token, in batch order
        items: list[tuple[int, int, int, int]] = []
        past = list(self._past)
        for fi, f in enumerate(feeds):
            n = len(f.tokens)
            if not 0 <= f.seq < self.n_seq:
                raise ValueError(f"sequence {f.seq} does not exist (n_seq {self.n_seq})")
            if not 0 <= f.n_logits <= n:
                raise ValueError(f"forward of {n} tokens cannot return {f.n_logits} logits rows")
            if past[f.seq] + n > self.n_ctx:
                raise DraftwiseError(f"context full: {past[f.seq]} + {n} tokens > n_ctx "
                                     f"{self.n_ctx}")
            first_out = n - f.n_logits  # positions from here on return logits
            items += [(fi if i >= first_out else -1, f.seq, past[f.seq] + i, t)
                      for i, t in enumerate(f.tokens)]
            past[f.seq] += n
        b, L, V = self._batch, self._L, self.vocab.n_vocab
        rows: list[list[np.ndarray]] = [[] for _ in feeds]
        for start in range(0, len(items), self._n_batch):
            chunk = items[start:start + self._n_batch]
            b.n_tokens = len(chunk)
            owners = []
            for i, (fi, seq, pos, t) in enumerate(chunk):
                b.token[i], b.pos[i], b.seq_id[i][0], b.logits[i] = t, pos, seq, fi >= 0
                if fi >= 0:
                    owners.append(fi)
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                for f in feeds:  # what earlier chunks of this call cached goes too
                    L.llama_memory_seq_rm(self._mem, f.seq, self._past[f.seq], -1)
                raise DraftwiseError(f"llama_decode failed with code {rc}")
            if owners:
                # A view of llama.cpp's buffer: valid until the next decode, which is all the
                # engine needs; copied only when a later decode of this call would overwrite it.
                out = np.ctypeslib.as_array(L.llama_get_logits(self._ctx), shape=(len(owners), V))
                if start + self._n_batch < len(items):
                    out = out.copy()
                r0 = 0
                for fi in dict.fromkeys(owners):  # each feed's rows are contiguous
                    r1 = r0 + owners.count(fi)
                    rows[fi].append(out[r0:r1])
                    r0 = r1
        self._past = past
        return [r[0] if len(r) == 1 else np.concatenate(r) if r
                else np.empty((0, V), dtype=np.float32) for r in rows]

    def rollback_seq(self, seq: int, n_keep: int) -> None:
        if n_keep < self._past[seq]:
            self._L.llama_memory_seq_rm(self._mem, seq, n_keep, -1)
            self._past[seq] = n_keep

    def rollback(self, n_keep: int) -> None:
        self.rollback_seq(0, n_keep)

    def close(self) -> None:
        L = getattr(self, "_L", None)
        if L is None or not getattr(self, "_ctx", None):
            return
        L.llama_batch_free(self._batch)
        L.llama_free(self._ctx)
        L.llama_model_free(self._model)
        self._ctx = None

    def __del__(self):  # native memory is not the garbage collector's
        try:
            self.close()
        except Exception:
            pass
