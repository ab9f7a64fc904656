"""Compare two vocabularies and map draft token ids to target token ids.

Two maps: `id_map` for tokenizers that agree on their ordinary tokens (same id, same text; special,
added and padding tokens may differ) and `intersection_map` for different tokenizers (tokens whose
byte strings exist in both vocabularies, Timor et al. 2025).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gguf import TokenType

from draftwise.pairing.meta import ModelInfo

ORDINARY = (int(TokenType.NORMAL), int(TokenType.BYTE))
ADDED = int(TokenType.USER_DEFINED)
# Share of ordinary ids that must agree for an id map (the rest are left unmapped).
MIN_AGREEMENT = 0.99


@dataclass
class TokenMap:
    """Pairs draft_ids[i] -> target_ids[i] (both [M], int64) naming the same string."""

    draft_ids: np.ndarray
    target_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.draft_ids)

    def is_identity(self, n: int) -> bool:
        """True if ids 0..n-1 map to themselves and nothing else is mapped."""
        return len(self) == n and bool(np.array_equal(self.draft_ids, self.target_ids))

    def to_draft(self, n_target: int) -> np.ndarray:
        """[n_target] draft id for each target id, -1 where there is none (first pair wins)."""
        out = np.full(n_target, -1, dtype=np.int64)
        order = np.arange(len(self))[::-1]  # reversed so that the first pair is written last
        out[self.target_ids[order]] = self.draft_ids[order]
        return out


@dataclass
class VocabMatch:
    """How the draft's vocabulary relates to the target's.

    kind: identical (same token list and logits width), compatible (an id map works), or
    different (bridging needed). n_ordinary counts the target's ordinary (non-special) tokens,
    n_agree those with the same id and text in the draft.
    """

    kind: str
    n_ordinary: int
    n_agree: int
    mismatches: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    special_diffs: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    padding: tuple[int, int] = (0, 0)  # logits rows beyond the token list: (target, draft)


def _ordinary(info: ModelInfo) -> dict[int, str]:
    return {i: t for i, (t, ty) in enumerate(zip(info.tokens, info.token_types)) if ty in ORDINARY}


def match_vocab(target: ModelInfo, draft: ModelInfo, n_show: int = 5) -> VocabMatch:
    pad = (max(0, (target.n_rows or target.n_tokens) - target.n_tokens),
           max(0, (draft.n_rows or draft.n_tokens) - draft.n_tokens))
    ot, od = _ordinary(target), _ordinary(draft)
    agree = sum(1 for i, t in ot.items() if od.get(i) == t)
    mism = [(i, ot.get(i), od.get(i)) for i in sorted(set(ot) | set(od)) if ot.get(i) != od.get(i)]
    mism.sort(key=lambda m: m[1] is None or m[2] is None)  # both sides present first (stable)
    n = max(target.n_tokens, draft.n_tokens)
    spec = [(i, target.token(i), draft.token(i)) for i in range(n)
            if (i not in ot and i not in od) and target.token(i) != draft.token(i)]
    if target.tokens == draft.tokens and target.n_rows == draft.n_rows:
        kind = "identical"
    elif ot and agree >= MIN_AGREEMENT * max(len(ot), len(od)):
        kind = "compatible"
    else:
        kind = "different"
    return VocabMatch(kind, len(ot), agree, mism[:n_show], spec[:n_show], pad)


def id_map(target: ModelInfo, draft: ModelInfo) -> TokenMap:
    """Same id and text for ordinary tokens; special and added tokens matched by text."""
    ot, od = _ordinary(target), _ordinary(draft)
    pairs = {i: i for i, t in od.items() if ot.get(i) == t}
    by_text = {t: i for i, t in reversed(list(enumerate(target.tokens))) if i not in ot}
    for i, (t, ty) in enumerate(zip(draft.tokens, draft.token_types)):
        if ty not in ORDINARY and t in by_text:
            pairs[i] = by_text[t]
    d = np.array(sorted(pairs), dtype=np.int64)
    return TokenMap(d, np.array([pairs[i] for i in d], dtype=np.int64))


def intersection_map(target: ModelInfo, draft: ModelInfo) -> TokenMap:
    """Ordinary and added tokens of the draft whose bytes are a token of the target."""
    index: dict[bytes, int] = {}  # bytes -> target id, NORMAL tokens preferred
    for i, (b, ty) in enumerate(zip(_token_bytes(target), target.token_types)):
        if b and (ty in ORDINARY or ty == ADDED) and (
                b not in index or (ty == TokenType.NORMAL
                                   and target.token_types[index[b]] != TokenType.NORMAL)):
            index[b] = i
    d, t = [], []
    for i, (b, ty) in enumerate(zip(_token_bytes(draft), draft.token_types)):
        if b and (ty in ORDINARY or ty == ADDED) and b in index:
            d.append(i)
            t.append(index[b])
    return TokenMap(np.array(d, dtype=np.int64), np.array(t, dtype=np.int64))


def byte_scheme(info: ModelInfo) -> str:
    """'bytelevel' (GPT-2 style, space as 'Ġ') or 'spm' (SentencePiece style, space as '▁')."""
    if info.tokenizer_model == "gpt2":
        return "bytelevel"
    if info.tokenizer_model == "llama":
        return "spm"
    g = sum(1 for t in info.tokens if t.startswith("Ġ"))
    s = sum(1 for t in info.tokens if t.startswith("▁"))
    return "bytelevel" if g > s else "spm"


def _token_bytes(info: ModelInfo) -> list[bytes | None]:
    """The byte string each token stands for; added and special tokens are their plain text."""
    scheme = byte_scheme(info)
    inv = _bytelevel_inverse()
    out: list[bytes | None] = []
    for t, ty in zip(info.tokens, info.token_types):
        if ty not in ORDINARY:
            out.append(t.encode("utf-8"))
        elif ty == TokenType.BYTE and len(t) == 6 and t.startswith("<0x"):
            out.append(bytes([int(t[3:5], 16)]))
        elif scheme == "bytelevel":
            try:
                out.append(bytes(inv[c] for c in t))
            except KeyError:
                out.append(t.encode("utf-8"))
        else:
            out.append(t.replace("▁", " ").encode("utf-8"))
    return out


def _bytelevel_inverse() -> dict[str, int]:
    """GPT-2's byte -> printable character table, inverted."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}
