"""The backend protocol: a causal LM with a KV cache the engine can roll back."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from draftwise.errors import DraftwiseError


@dataclass(frozen=True)
class VocabInfo:
    """Vocabulary facts. n_vocab is the width of a logits row (may include padding rows)."""

    n_vocab: int
    n_tokens: int  # real tokens in the tokenizer (<= n_vocab)
    bos_id: int | None
    eos_ids: frozenset[int]
    add_bos: bool


@dataclass(frozen=True)
class Feed:
    """Tokens [n] appended to sequence `seq` of a cache; logits wanted for the last n_logits."""

    seq: int
    tokens: Sequence[int]
    n_logits: int = 1


class Backend(ABC):
    """A causal LM whose cache holds `n_seq` sequences, each of up to n_ctx positions.

    `forward_many` appends tokens to several sequences in one batch and returns each feed's logits;
    `rollback_seq(seq, n)` keeps the first n positions of one sequence. `forward`, `rollback` and
    `n_past` are sequence 0. `forward_seconds` accumulates the time spent inside forward calls,
    so the engine can tell model time from its own overhead.

    A single-sequence backend implements `_forward`, `rollback` and `n_past`; the defaults below
    make it the n_seq = 1 case of the sequence API.
    """

    name: str = "backend"
    model_path: str = ""
    adapter_path: str = ""  # a LoRA adapter applied over model_path (llama.cpp, distill --adapter)
    device: str = "cpu"  # where the weights live: cpu, cuda[:N] (transformers), gpu:N (llama.cpp)
    n_ctx: int
    vocab: VocabInfo
    forward_seconds: float = 0.0
    n_seq: int = 1

    @property
    @abstractmethod
    def n_past(self) -> int: ...

    @property
    def weights(self) -> str:
        """Where the weights come from: the model file, plus the adapter if one is applied."""
        return f"{self.model_path} + {self.adapter_path}" if self.adapter_path else self.model_path

    def seq_past(self, seq: int) -> int:
        """Positions cached for sequence seq."""
        self._one_sequence(seq)
        return self.n_past

    def rollback_seq(self, seq: int, n_keep: int) -> None:
        """Keep the first n_keep positions of sequence seq."""
        self._one_sequence(seq)
        self.rollback(n_keep)

    def _forward_many(self, feeds: Sequence[Feed]) -> list[np.ndarray]:
        if len(feeds) != 1:
            raise DraftwiseError(f"the {self.name} backend holds one sequence; it cannot decode "
                                 f"{len(feeds)} in one batch")
        self._one_sequence(feeds[0].seq)
        return [self._forward(feeds[0].tokens, feeds[0].n_logits)]

    def _one_sequence(self, seq: int) -> None:
        if seq != 0:
            raise DraftwiseError(f"the {self.name} backend holds one sequence; sequence {seq} "
                                 "does not exist")

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
        """Append tokens [n] to sequence 0; return logits [n_logits, n_vocab] (float32)."""
        t0 = time.perf_counter()
        out = self._forward(tokens, n_logits)
        self.forward_seconds += time.perf_counter() - t0
        return out

    def forward_many(self, feeds: Sequence[Feed]) -> list[np.ndarray]:
        """One batch over several sequences (feeds of one sequence follow each other); returns
        per feed logits [n_logits, n_vocab], valid until the next forward."""
        t0 = time.perf_counter()
        out = self._forward_many(feeds)
        self.forward_seconds += time.perf_counter() - t0
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native resources."""
