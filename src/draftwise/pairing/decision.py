"""The one pairing decision: how (and whether) a draft speculates for a target.

`check` reports it and the loader builds the drafter from it, so both always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from draftwise.pairing.meta import ModelInfo
from draftwise.pairing.tokens import TokenMap, VocabMatch, id_map, intersection_map, match_vocab


@dataclass(frozen=True)
class Pairing:
    """verdict: identical | compatible | bridged | incompatible, with a one-line reason.

    tmap: draft id -> target id pairs (compatible: an id map; bridged: the vocabularies'
    intersection); None where the draft's ids are the target's (identical, or token lists equal
    and only padding rows differ)."""

    verdict: str
    reason: str
    vocab: VocabMatch
    tmap: TokenMap | None = None

    @property
    def ok(self) -> bool:
        return self.verdict != "incompatible"


def decide(target: ModelInfo, draft: ModelInfo) -> Pairing:
    vm = match_vocab(target, draft)
    if vm.kind == "identical":
        return Pairing("identical", "same vocabulary: direct speculation", vm)
    if vm.kind == "compatible":
        what = []
        if vm.padding[0] != vm.padding[1]:
            what.append("padding rows")
        if vm.special_diffs or vm.n_agree < vm.n_ordinary:
            what.append("special or added tokens")
        reason = (f"ordinary tokens agree; differences only in {' and '.join(what) or 'token lists'}"
                  ": speculation through an id map, output still exactly the target's")
        same_ids = target.tokens == draft.tokens  # only the logits widths differ
        return Pairing("compatible", reason, vm, None if same_ids else id_map(target, draft))
    inter = intersection_map(target, draft)
    if len(inter) == 0:
        return Pairing("incompatible", "the vocabularies share no token strings, so the draft's "
                       "tokens cannot be mapped to the target's; pick a draft with a related "
                       "tokenizer", vm, inter)
    return Pairing("bridged", "different tokenizers: the draft's text is re-tokenized for the "
                   f"target (greedy) or drafted over {len(inter)} shared tokens (sampling); "
                   "lossless, slower than a same-tokenizer draft", vm, inter)
