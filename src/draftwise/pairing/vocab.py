"""Compare the vocabularies of a target and a draft backend."""

from __future__ import annotations

from dataclasses import dataclass, field

from draftwise.backends.base import Backend


@dataclass
class VocabDiff:
    """How two vocabularies differ. `same_ids` counts ids < min(n_tokens) with equal token text."""

    n_tokens_target: int
    n_tokens_draft: int
    n_vocab_target: int
    n_vocab_draft: int
    same_ids: int
    mismatches: list[tuple[int, str, str]] = field(default_factory=list)  # first few (id, t, d)

    @property
    def identical_tokens(self) -> bool:
        """Every real token has the same id and text; logits widths may differ (padding rows)."""
        return self.n_tokens_target == self.n_tokens_draft and not self.mismatches

    def describe(self) -> str:
        if self.identical_tokens:
            return "identical tokens"
        parts = [f"target has {self.n_tokens_target} tokens, draft {self.n_tokens_draft}"]
        if self.mismatches:
            i, t, d = self.mismatches[0]
            parts.append(f"{len(self.mismatches)}+ ids differ, first id {i}: {t!r} vs {d!r}")
        return "; ".join(parts)


def compare_vocab(target: Backend, draft: Backend, max_mismatches: int = 5) -> VocabDiff:
    n = min(target.vocab.n_tokens, draft.vocab.n_tokens)
    same, mism = 0, []
    for i in range(n):
        t, d = target.token_text(i), draft.token_text(i)
        if t == d:
            same += 1
        elif len(mism) < max_mismatches:
            mism.append((i, t, d))
    return VocabDiff(target.vocab.n_tokens, draft.vocab.n_tokens, target.vocab.n_vocab,
                     draft.vocab.n_vocab, same, mism)
