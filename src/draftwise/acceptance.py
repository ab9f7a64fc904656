"""Acceptance modes: `exact` (lossless, the default) and the opt-in lossy (lenient) ones.

A lenient mode keeps every drafted token exact verification keeps, plus those its rule keeps:
  topk:N              greedy: d is among the target's N most likely tokens
  ratio:L             greedy and sampling: p(d) >= L * max p
  typical:EPS[,DELTA] sampling: p(d) > min(EPS, DELTA * exp(-H(p))) (Medusa's typical acceptance,
                      vLLM's former TypicalAcceptanceSampler; DELTA defaults to sqrt(EPS), as there)
p is the target's distribution at the drafted position: softmax of the raw logits for greedy
decoding, the sampling distribution (temperature, top-k, top-p) when sampling.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from draftwise.errors import DraftwiseError

FORMS = "exact, topk:N (N >= 2), ratio:L (0 < L < 1) or typical:EPS[,DELTA] (0 < EPS, DELTA < 1)"
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"


@dataclass(frozen=True)
class Acceptance:
    """A parsed mode. top_n: topk's N; ratio: ratio's L; eps, delta: typical's thresholds."""

    mode: str = "exact"  # exact | topk | ratio | typical
    top_n: int = 0
    ratio: float = 0.0
    eps: float = 0.0
    delta: float = 0.0

    @property
    def exact(self) -> bool:
        return self.mode == "exact"

    @property
    def name(self) -> str:
        """The canonical spelling, e.g. `typical:0.09,0.3`."""
        if self.mode == "topk":
            return f"topk:{self.top_n}"
        if self.mode == "ratio":
            return f"ratio:{_num(self.ratio)}"
        if self.mode == "typical":
            return f"typical:{_num(self.eps)},{_num(self.delta)}"
        return "exact"

    def applies(self, greedy: bool) -> bool:
        """Whether this mode is defined for this decoding (greedy, or sampling)."""
        return not (self.mode == "topk" and not greedy or self.mode == "typical" and greedy)

    def check(self, greedy: bool) -> None:
        """Raise unless this mode applies to this decoding."""
        if self.applies(greedy):
            return
        if greedy:
            raise DraftwiseError(f"acceptance mode {self.name} is for sampling (temperature > 0); "
                                 "with greedy decoding use topk:N or ratio:L")
        raise DraftwiseError(f"acceptance mode {self.name} is for greedy decoding (temperature "
                             "0); when sampling use ratio:L or typical:EPS[,DELTA]")

    def keeps_greedy(self, logits: np.ndarray, d: int) -> bool:
        """logits [V]: the target's logits at one position; d: the drafted id there."""
        if self.mode == "topk":
            return int(np.count_nonzero(logits > logits[d])) < self.top_n
        if self.mode == "ratio":  # p(d) / max p = exp(logit_d - max logit)
            return float(logits[d]) - float(logits.max()) >= math.log(self.ratio)
        return False

    def keeps_sampling(self, p: np.ndarray, d: int) -> bool:
        """p [V]: the target's sampling distribution at one position; d: the drafted id there."""
        if self.mode == "ratio":
            return p[d] >= self.ratio * p.max()
        if self.mode == "typical":
            nz = p[p > 0]
            entropy = float(-(nz * np.log(nz)).sum())
            return p[d] > min(self.eps, self.delta * math.exp(-entropy))
        return False


EXACT = Acceptance()


def _num(x: float) -> str:
    """The shortest decimal that parses back to x (no exponent: parse_accept reads decimals)."""
    return np.format_float_positional(x, trim="-")


def parse_accept(spec: str) -> Acceptance:
    """'exact', 'topk:4', 'ratio:0.3', 'typical:0.09' or 'typical:0.09,0.3' -> Acceptance."""
    s = spec.strip().lower()
    bad = DraftwiseError(f"{spec!r} is not an acceptance mode: use {FORMS}")
    if s == "exact":
        return EXACT
    if m := re.fullmatch(r"topk:(\d+)", s):
        if int(m[1]) < 2:
            raise bad
        return Acceptance("topk", top_n=int(m[1]))
    if m := re.fullmatch(rf"ratio:{_NUM}", s):
        if not 0 < float(m[1]) < 1:
            raise bad
        return Acceptance("ratio", ratio=float(m[1]))
    if m := re.fullmatch(rf"typical:{_NUM}(?:,{_NUM})?", s):
        eps = float(m[1])
        delta = float(m[2]) if m[2] else math.sqrt(eps)
        if not (0 < eps < 1 and 0 < delta < 1):
            raise bad
        return Acceptance("typical", eps=eps, delta=delta)
    raise bad
