"""A bigram language model in numpy: a real Backend whose output distribution is known exactly.

logits of the next token depend only on the previous token: table[prev] ([V, V]). Sequences of
its samples have the closed-form probability prod p(x_i | x_{i-1}), which statistical tests use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from draftwise.backends.base import Backend, VocabInfo


class BigramBackend(Backend):
    name = "bigram"

    def __init__(self, table: np.ndarray, eos: int | None = None, n_ctx: int = 512):
        self.table = np.asarray(table, dtype=np.float32)  # [V, V] logits
        V = self.table.shape[0]
        self.n_ctx = n_ctx
        self.vocab = VocabInfo(V, V, None, frozenset([eos]) if eos is not None else frozenset(),
                               False)
        self._cache: list[int] = []

    @property
    def n_past(self) -> int:
        return len(self._cache)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return [int(c) % self.vocab.n_vocab for c in text.split()]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(f" {i}" for i in ids)

    def token_text(self, token_id: int) -> str:
        return str(token_id)

    def apply_chat_template(self, messages: list[dict]) -> str:
        return " ".join(m["content"] for m in messages)

    def _forward(self, tokens: Sequence[int], n_logits: int) -> np.ndarray:
        self._cache.extend(tokens)
        return self.table[np.asarray(self._cache[len(self._cache) - n_logits:], dtype=int)]

    def rollback(self, n_keep: int) -> None:
        del self._cache[n_keep:]
