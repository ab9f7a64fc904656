"""Drafters for a draft model whose token ids are not the target's.

IdMapDrafter: the ordinary tokens agree and only special, added or padding tokens differ; ids are
translated one to one. BridgeDrafter: different tokenizers; the committed context reaches the draft
as text. Greedy drafts are re-tokenized for the target with a look-behind window (as transformers'
universal assisted generation does). Sampling drafts only tokens whose strings exist in both
vocabularies (token-level intersection, Timor et al., ICML 2025), so q is a distribution over target
ids and the verifier's rejection sampling stays exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from draftwise.backends.base import Backend
from draftwise.config import SamplingConfig
from draftwise.drafters.base import Draft, Drafter
from draftwise.drafters.lm import DraftLM
from draftwise.drafters.model import top_prob
from draftwise.errors import DraftwiseError
from draftwise.pairing.tokens import TokenMap
from draftwise.sampling import probs, sample

LOOKBEHIND = 8  # tokens of committed context re-decoded with new text to line up boundaries


class _MappedDrafter(Drafter):
    """Drafts over the draft ids that have a target id (a TokenMap); subclasses build the draft's
    context (`_draft_ctx`) from the target's."""

    grows_only = True  # whether each draft context extends the last (see DraftLM)

    def __init__(self, draft: Backend, tmap: TokenMap, n_vocab_target: int, p_min: float = 0.0):
        if len(tmap) == 0:
            raise DraftwiseError("the draft and the target share no tokens; they cannot pair")
        self.lm = DraftLM(draft, grows_only=self.grows_only)
        self.d_ids, self.t_ids = tmap.draft_ids, tmap.target_ids
        self.n_vocab_target = n_vocab_target
        self.p_min = p_min
        self.reset()

    def model_backend(self) -> Backend:
        return self.lm.backend

    def _draft_ctx(self, ctx: list[int]) -> list[int]:
        raise NotImplementedError

    def begin(self, ctx: list[int]) -> None:
        self.reset()
        dctx = self._draft_ctx(ctx)
        if len(dctx) < self.lm.backend.n_ctx:  # a longer context leaves no room to draft
            self.lm.prefill(dctx)

    def _room(self, dctx: list[int]) -> int:
        return self.lm.backend.n_ctx - len(dctx) if dctx else 0

    def _propose_mapped(self, dctx: list[int], k: int, s: SamplingConfig,
                        rng: np.random.Generator) -> Draft:
        """Up to k tokens; greedy: the most likely mapped draft token; sampling: draft from q
        restricted to mapped tokens and renormalized, q [k, V_target] its image in target ids."""
        k = min(k, self._room(dctx))
        if k <= 0:
            return Draft()
        logits = self.lm.logits_after(dctx)
        tokens: list[int] = []
        qs: list[np.ndarray] = []
        for i in range(k):
            if s.greedy:
                if self.p_min and top_prob(logits) < self.p_min:
                    break
                j = int(np.argmax(logits[self.d_ids]))
            else:
                qm = probs(logits[None], s)[0][self.d_ids]
                z = qm.sum()
                if z <= 0:
                    break
                qm /= z
                if self.p_min and qm.max() < self.p_min:
                    break
                j = sample(qm, rng)
                qs.append(np.bincount(self.t_ids, weights=qm, minlength=self.n_vocab_target))
            tokens.append(int(self.t_ids[j]))
            if i == k - 1:
                break
            logits = self.lm.step(int(self.d_ids[j]))
        return Draft(tokens, np.stack(qs) if qs else None)


class IdMapDrafter(_MappedDrafter):
    """Draft ids translated one to one; target tokens without a draft id are left out of the
    draft's context, draft tokens without a target id are never proposed."""

    name = "idmap"

    def __init__(self, draft: Backend, tmap: TokenMap, n_vocab_target: int, p_min: float = 0.0):
        self._to_draft = tmap.to_draft(n_vocab_target)
        super().__init__(draft, tmap, n_vocab_target, p_min)

    def reset(self) -> None:
        self.lm.reset()
        self._dctx: list[int] = []
        self._n_conv = 0  # target context tokens translated so far

    def _draft_ctx(self, ctx: list[int]) -> list[int]:
        for t in ctx[self._n_conv:]:
            d = int(self._to_draft[t]) if t < len(self._to_draft) else -1
            if d >= 0:
                self._dctx.append(d)
        self._n_conv = len(ctx)
        return self._dctx

    def propose(self, ctx: list[int], k: int, sampling: SamplingConfig,
                rng: np.random.Generator) -> Draft:
        return self._propose_mapped(self._draft_ctx(ctx), k, sampling, rng)


def _text_after(decode: Callable[[Sequence[int]], str], tail: Sequence[int],
                new: Sequence[int]) -> str | None:
    """The text `new` adds after `tail`; None while it ends inside a UTF-8 character."""
    before, after = decode(list(tail)), decode([*tail, *new])
    if after.endswith("\ufffd"):
        return None
    return after[len(before):] if after.startswith(before) else decode(list(new))


class BridgeDrafter(_MappedDrafter):
    """A draft model with another tokenizer. The draft's context is the target's text, tokenized by
    the draft: kept incrementally, its last LOOKBEHIND tokens re-tokenized with each new piece of
    text so that token boundaries match a full tokenization."""

    name = "bridge"
    grows_only = False  # the look-behind window re-tokenizes the context's tail

    def __init__(self, target: Backend, draft: Backend, inter: TokenMap, p_min: float = 0.0,
                 lookbehind: int = LOOKBEHIND):
        self.target = target
        self.lookbehind = lookbehind
        self._draft_eos = draft.vocab.eos_ids
        super().__init__(draft, inter, target.vocab.n_vocab, p_min)

    def reset(self) -> None:
        self.lm.reset()
        self._prefix: list[int] = []  # the draft's BOS, never re-tokenized
        self._body: list[int] = []  # draft ids for the target text converted so far
        self._n_conv = 0  # target context tokens converted so far

    def _draft_ctx(self, ctx: list[int]) -> list[int]:
        tgt, dr, L = self.target, self.lm.backend, self.lookbehind
        if self._n_conv == 0:
            text = tgt.detokenize(ctx)
            if text.endswith("\ufffd"):
                return self._prefix + self._body
            ids = dr.tokenize(text, add_special=True)
            n_pre = 1 if ids and dr.vocab.bos_id is not None and ids[0] == dr.vocab.bos_id else 0
            self._prefix, self._body = ids[:n_pre], ids[n_pre:]
            self._n_conv = len(ctx)
        elif len(ctx) > self._n_conv:
            tail = ctx[max(0, self._n_conv - L):self._n_conv]
            text = _text_after(tgt.detokenize, tail, ctx[self._n_conv:])
            if text is not None:
                keep = max(0, len(self._body) - L)
                window = dr.detokenize(self._body[keep:])
                self._body = self._body[:keep] + dr.tokenize(window + text, add_special=False)
                self._n_conv = len(ctx)
        return self._prefix + self._body

    def propose(self, ctx: list[int], k: int, sampling: SamplingConfig,
                rng: np.random.Generator) -> Draft:
        dctx = self._draft_ctx(ctx)
        if self._n_conv != len(ctx):  # the context ends inside a character: draft next round
            return Draft()
        if not sampling.greedy:
            return self._propose_mapped(dctx, k, sampling, rng)
        return self._propose_text(ctx, dctx, k)

    def _propose_text(self, ctx: list[int], dctx: list[int], k: int) -> Draft:
        """Greedy: k + 1 draft tokens, their text re-tokenized by the target; the last target token
        is dropped (the draft may have stopped inside it) unless the draft ended with EOS."""
        n = min(k + 1, self._room(dctx))
        if n <= 0 or k <= 0:
            return Draft()
        logits = self.lm.logits_after(dctx)
        drafted: list[int] = []
        eos = False
        for i in range(n):
            if self.p_min and top_prob(logits) < self.p_min:
                break
            d = int(np.argmax(logits))
            if d in self._draft_eos:
                eos = True
                break
            drafted.append(d)
            if i == n - 1:
                break
            logits = self.lm.step(d)
        if not drafted:
            return Draft()
        dr = self.lm.backend
        text = dr.detokenize([*self._body[-self.lookbehind:], *drafted])
        before = dr.detokenize(self._body[-self.lookbehind:])
        text = text[len(before):] if text.startswith(before) else dr.detokenize(drafted)
        text = text.rstrip("\ufffd")
        ids = self._target_ids_after(ctx, text) if text else []
        if not eos:
            ids = ids[:-1]
        return Draft(ids[:k])

    def _target_ids_after(self, ctx: list[int], text: str) -> list[int]:
        """Target ids for `text` following ctx: tokenize the look-behind text plus `text` and
        drop the part that spells the look-behind; tokenize `text` alone if no prefix does."""
        tgt = self.target
        tail = ctx[-self.lookbehind:]
        prev = tgt.detokenize(tail)
        u = tgt.tokenize(prev + text, add_special=False)
        if u[:len(tail)] == tail:
            return u[len(tail):]
        for j in range(1, len(u)):
            s = tgt.detokenize(u[:j])
            if s == prev:
                return u[j:]
            if len(s) > len(prev):
                break
        return tgt.tokenize(text, add_special=False)
