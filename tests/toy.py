"""A bigram language model in numpy: a real Backend whose output distribution is known exactly.

logits of the next token depend only on the previous token: table[prev] ([V, V]). Sequences of
its samples have the closed-form probability prod p(x_i | x_{i-1}), which statistical tests use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from draftwise.backends.base import Backend, Feed, VocabInfo


class BigramBackend(Backend):
    name = "bigram"

    def __init__(self, table: np.ndarray, eos: int | None = None, n_ctx: int = 512,
                 n_seq: int = 1):
        self.table = np.asarray(table, dtype=np.float32)  # [V, V] logits
        V = self.table.shape[0]
        self.n_ctx, self.n_seq = n_ctx, n_seq
        self.vocab = VocabInfo(V, V, None, frozenset([eos]) if eos is not None else frozenset(),
                               False)
        self._caches: list[list[int]] = [[] for _ in range(n_seq)]

    @property
    def n_past(self) -> int:
        return len(self._caches[0])

    def seq_past(self, seq: int) -> int:
        return len(self._caches[seq])

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return [int(c) % self.vocab.n_vocab for c in text.split()]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(f" {i}" for i in ids)

    def token_text(self, token_id: int) -> str:
        return str(token_id)

    def apply_chat_template(self, messages: list[dict]) -> str:
        return " ".join(m["content"] for m in messages)

    def _forward(self, tokens: Sequence[int], n_logits: int) -> np.ndarray:
        return self._forward_many([Feed(0, tokens, n_logits)])[0]

    def _forward_many(self, feeds: Sequence[Feed]) -> list[np.ndarray]:
        out = []
        for f in feeds:
            cache = self._caches[f.seq]
            cache.extend(f.tokens)
            out.append(self.table[np.asarray(cache[len(cache) - f.n_logits:], dtype=int)])
        return out

    def rollback(self, n_keep: int) -> None:
        self.rollback_seq(0, n_keep)

    def rollback_seq(self, seq: int, n_keep: int) -> None:
        del self._caches[seq][n_keep:]
