"""The backend protocol: a causal LM with a KV cache the engine can roll back."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VocabInfo:
    """Vocabulary facts. n_vocab is the width of a logits row (may include padding rows)."""

    n_vocab: int
    n_tokens: int  # real tokens in the tokenizer (<= n_vocab)
    bos_id: int | None
    eos_ids: frozenset[int]
    add_bos: bool


class Backend(ABC):
    """A causal LM whose cache holds `n_past` positions.

    `forward` appends tokens to the cache and returns logits for the last `n_logits` of them;
    `rollback(n)` keeps the first n cached positions. `forward_seconds` accumulates the time spent
    inside forward calls, so the engine can tell model time from its own overhead.
    """

    name: str = "backend"
    model_path: str = ""
    device: str = "cpu"  # where the weights live: cpu, cuda[:N] (transformers), gpu:N (llama.cpp)
    n_ctx: int
    vocab: VocabInfo
    forward_seconds: float = 0.0

    @property
    @abstractmethod
    def n_past(self) -> int: ...

    @abstractmethod
    def tokenize(self, text: str, add_special: bool = True) -> list[int]: ...

    @abstractmethod
    def detokenize(self, ids: Sequence[int]) -> str: ...

    @abstractmethod
    def token_text(self, token_id: int) -> str:
        """The raw vocabulary entry of a token (as stored in the tokenizer), for comparisons."""

    @abstractmethod
    def _forward(self, tokens: Sequence[int], n_logits: int) -> np.ndarray: ...

    @abstractmethod
    def rollback(self, n_keep: int) -> None: ...

    @abstractmethod
    def apply_chat_template(self, messages: list[dict]) -> str: ...

    def forward(self, tokens: Sequence[int], n_logits: int = 1) -> np.ndarray:
        """Append tokens [n] to the cache; return logits [n_logits, n_vocab] (float32)."""
        t0 = time.perf_counter()
        out = self._forward(tokens, n_logits)
        self.forward_seconds += time.perf_counter() - t0
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native resources."""
