"""Token ids to streamed text: incremental detokenization and stop strings."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Prompt tokens decoded along with the output, so that the first output token keeps its leading
# space (SentencePiece drops it at the start of a decode).
_LOOKBEHIND = 4


class Detokenizer:
    """Decodes a growing id list into text deltas without re-decoding everything each time.

    Holds back text that ends in an incomplete UTF-8 sequence (shown as U+FFFD) until the next
    token completes it (the prefix/read offsets scheme of TGI and vLLM).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], prompt_ids: Sequence[int]):
        self.decode = decode
        self.context = list(prompt_ids[-_LOOKBEHIND:])
        self.ids = list(self.context)
        self.prefix = 0
        self.read = len(self.ids)

    def add(self, new: Sequence[int]) -> str:
        self.ids.extend(new)
        before = self.decode(self.ids[self.prefix:self.read])
        after = self.decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def text_of(self, ids: Sequence[int]) -> str:
        """The text of output ids [n] as it reads after the prompt (with its leading space)."""
        return self.decode(self.context + list(ids))[len(self.decode(self.context)):]

    def flush(self) -> str:
        before = self.decode(self.ids[self.prefix:self.read])
        after = self.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):]


class StopMatcher:
    """Cuts streamed text at the first stop string; holds back a tail that may start one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, delta: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit)."""
        if not self.stops:
            return delta, False
        text = self.pending + delta
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.pending = ""
            return text[:cut], True
        hold = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])),
                   default=0)
        self.pending = text[len(text) - hold:] if hold else ""
        return text[:len(text) - hold], False

    def found(self, text: str) -> bool:
        """Whether text contains a stop string."""
        return any(s in text for s in self.stops)

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
