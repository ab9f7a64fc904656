"""What OpenAI-compatible servers say about speculation, read from their responses and /metrics.

Per response: draftwise's `speculative` object, llama-server's `timings.draft_n` /
`draft_n_accepted`, vLLM's `metrics.speculative_decoding` (with --per-request-spec-decode-metrics).
From /metrics: llama-server's and vLLM's spec-decode counters (differenced around a run) and
SGLang's gauges (the most recent batch, not the run). Names as their sources define them; see
tests/data/SOURCES.md for the recorded samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ENGINES = ("draftwise", "llama-server", "vllm", "sglang")
# GET /v1/models "owned_by" of each engine's model cards.
OWNED_BY = {"draftwise": "draftwise", "llamacpp": "llama-server", "vllm": "vllm",
            "sglang": "sglang"}
_PREFIX = {"draftwise_": "draftwise", "llamacpp:": "llama-server", "vllm:": "vllm",
           "sglang:": "sglang"}
# (draft tokens, accepted tokens, verify steps) counters, cumulative since the server started.
COUNTERS = {
    "llama-server": ("llamacpp:spec_decode_num_draft_tokens_total",
                     "llamacpp:spec_decode_num_accepted_tokens_total",
                     "llamacpp:spec_decode_num_drafts_total"),
    "vllm": ("vllm:spec_decode_num_draft_tokens_total",
             "vllm:spec_decode_num_accepted_tokens_total",
             "vllm:spec_decode_num_drafts_total"),
}
SGLANG_RATE, SGLANG_LENGTH = "sglang:spec_accept_rate", "sglang:spec_accept_length"


def parse_prometheus(text: str) -> dict[str, list[float]]:
    """{metric sample name: [value of each label set]} from Prometheus text format.

    Comments and malformed lines are skipped (a server's /metrics is not ours to reject)."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        if brace >= 0:
            name, rest = line[:brace], line[line.rfind("}") + 1:]
        else:
            name, _, rest = line.partition(" ")
        parts = rest.split()
        if not name.strip() or not parts:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        if math.isfinite(value):
            out.setdefault(name.strip(), []).append(value)
    return out


def total(metrics: dict[str, list[float]], name: str) -> float:
    """A counter summed over its label sets (vLLM keeps one series per engine core)."""
    return sum(metrics.get(name, ()))


def mean(metrics: dict[str, list[float]], name: str) -> float | None:
    """A gauge averaged over its label sets (SGLang reports one per scheduler rank)."""
    v = metrics.get(name)
    return sum(v) / len(v) if v else None


def engine_from_models(models: dict) -> str | None:
    """The engine named by GET /v1/models (owned_by of its first model card), if a known one."""
    data = models.get("data") if isinstance(models, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return OWNED_BY.get(str(data[0].get("owned_by", "")).lower())
    return None


def engine_from_metrics(metrics: dict[str, list[float]]) -> str | None:
    """The engine whose metric names /metrics shows, if a known one."""
    for prefix, engine in _PREFIX.items():
        if any(name.startswith(prefix) for name in metrics):
            return engine
    return None


@dataclass
class Spec:
    """Draft tokens proposed and accepted (and verify steps, where the server says)."""

    drafted: int
    accepted: int
    steps: int | None = None

    @property
    def rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


def spec_from_response(obj: dict) -> tuple[str, Spec] | None:
    """(engine, Spec) from one response body or stream chunk that carries speculation numbers."""
    if not isinstance(obj, dict):
        return None
    s = obj.get("speculative")
    if isinstance(s, dict) and "drafted" in s:
        return "draftwise", Spec(int(s["drafted"]), int(s.get("accepted", 0)))
    t = obj.get("timings")
    if isinstance(t, dict) and "predicted_n" in t:
        # llama-server adds draft_n / draft_n_accepted only when it drafted something.
        return "llama-server", Spec(int(t.get("draft_n", 0)), int(t.get("draft_n_accepted", 0)))
    m = obj.get("metrics")
    sd = m.get("speculative_decoding") if isinstance(m, dict) else None
    if isinstance(sd, dict) and "num_draft_tokens" in sd:
        return "vllm", Spec(int(sd["num_draft_tokens"]), int(sd.get("num_accepted_draft_tokens", 0)),
                            int(sd["num_spec_steps"]) if "num_spec_steps" in sd else None)
    return None


@dataclass
class ServerAcceptance:
    """What /metrics says about a run: counter differences, or SGLang's latest gauges."""

    source: str  # "counters" | "gauge" | "none"
    drafted: float | None = None
    accepted: float | None = None
    steps: float | None = None
    rate: float | None = None
    accept_length: float | None = None  # tokens per verify step, bonus token included


def acceptance_from_metrics(engine: str | None, before: dict[str, list[float]] | None,
                            after: dict[str, list[float]] | None) -> ServerAcceptance:
    """Acceptance over a run from /metrics read before and after it."""
    if after is None:
        return ServerAcceptance("none")
    if engine in COUNTERS and before is not None:
        names = COUNTERS[engine]
        if all(n in after for n in names[:2]):
            d, a, s = (total(after, n) - total(before, n) for n in names)
            steps = s if names[2] in after else None
            return ServerAcceptance("counters", d, a, steps, a / d if d > 0 else None,
                                    1 + a / steps if steps else None)
    if engine == "sglang" and SGLANG_RATE in after:
        return ServerAcceptance("gauge", rate=mean(after, SGLANG_RATE),
                                accept_length=mean(after, SGLANG_LENGTH))
    return ServerAcceptance("none")
