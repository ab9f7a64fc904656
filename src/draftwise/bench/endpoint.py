"""`draftwise bench --endpoint URL`: measure OpenAI-compatible servers from the client side.

Each endpoint in turn, each concurrency level C in turn: C streams send the prompt set (cycled,
streaming chat or text completions) until `requests` were sent or `time_limit` seconds passed
(requests already running finish). Per request: time to first token, the gaps between streamed
chunks, tokens (usage, else chunks) and tok/s after the first chunk; per level: total tok/s and
acceptance, from the responses where the server reports it per request, else from /metrics read
before and after the level (see serverstats). A server that stops answering, or fails every
request of a level, ends its run with one line; what was measured is still reported.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from draftwise.bench.prompts import Prompt
from draftwise.bench.serverstats import (
    ENGINES,
    ServerAcceptance,
    engine_from_metrics,
    engine_from_models,
    parse_prometheus,
    spec_from_response,
)
from draftwise.errors import DraftwiseError

MAX_CONCURRENCY = 512


def parse_concurrency(spec: str | tuple[int, ...]) -> tuple[int, ...]:
    """"1,4,16" -> (1, 4, 16); each 1..512, in the order given, duplicates dropped."""
    if isinstance(spec, tuple):
        levels = spec
    else:
        try:
            levels = tuple(int(x) for x in str(spec).replace(" ", "").split(",") if x)
        except ValueError:
            raise DraftwiseError(f"--concurrency takes numbers like 1,4,16; got {spec!r}") from None
    if not levels or any(not 1 <= c <= MAX_CONCURRENCY for c in levels):
        raise DraftwiseError(f"--concurrency levels must be 1-{MAX_CONCURRENCY}; got {spec!r}")
    return tuple(dict.fromkeys(levels))


def base_url(url: str) -> str:
    """The server root of an endpoint given as http://host:port, .../ or .../v1."""
    u = url.strip().rstrip("/")
    if not u.startswith(("http://", "https://")):
        raise DraftwiseError(f"--endpoint takes an http(s) URL such as http://127.0.0.1:8000; "
                             f"got {url!r}")
    return u[:-3] if u.endswith("/v1") else u


@dataclass(frozen=True)
class EndpointOptions:
    """Which servers and how hard: concurrency levels, requests and seconds per level."""

    endpoints: tuple[str, ...]
    concurrency: tuple[int, ...] | str = (1, 4, 16)
    engine: str = "auto"  # or one of serverstats.ENGINES, for every endpoint
    requests: int | None = None  # per level; default max(prompts, 2 x C)
    time_limit: float = 300.0  # seconds per level; also each request's read timeout
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    model: str | None = None  # default: the first model of GET /v1/models
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise DraftwiseError("give at least one --endpoint URL")
        object.__setattr__(self, "endpoints", tuple(base_url(u) for u in self.endpoints))
        object.__setattr__(self, "concurrency", parse_concurrency(self.concurrency))
        if self.engine not in ("auto", *ENGINES):
            raise DraftwiseError(f"--engine must be one of auto, {', '.join(ENGINES)}; got "
                                 f"{self.engine!r}")
        if self.requests is not None and self.requests < 1:
            raise DraftwiseError(f"--requests must be 1 or more, got {self.requests}")
        if not self.time_limit > 0:
            raise DraftwiseError(f"--time-limit must be more than 0 seconds, got {self.time_limit}")
        if self.max_tokens < 1:
            raise DraftwiseError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.temperature >= 0:
            raise DraftwiseError(f"temperature must be >= 0, got {self.temperature}")

    def n_requests(self, n_prompts: int, c: int) -> int:
        return self.requests if self.requests is not None else max(n_prompts, 2 * c)


@dataclass
class RequestRecord:
    """One streamed request. Times in seconds from the level's start (t_start) or the request's
    own start (ttft, t_last, t_total); gaps [n_chunks - 1] between chunks that carried text."""

    endpoint: str
    concurrency: int
    prompt_id: str
    category: str
    ok: bool
    error: str | None = None
    t_start: float = 0.0
    ttft: float | None = None
    t_last: float | None = None  # the last chunk with text
    t_total: float = 0.0
    n_tokens: int = 0
    n_chunks: int = 0
    tokens_from_usage: bool = False
    tok_s: float | None = None  # (tokens - 1) / (last chunk - first chunk)
    gaps: list[float] = field(default_factory=list)
    drafted: int | None = None  # as the response reported them
    accepted: int | None = None
    spec_steps: int | None = None


@dataclass
class EndpointInfo:
    url: str
    label: str  # short name in tables and plots
    engine: str  # one of ENGINES, or "unknown"
    engine_from: str  # --engine | /v1/models | /metrics | responses | nothing
    model: str
    has_metrics: bool = False


@dataclass
class LevelSummary:
    """One endpoint at one concurrency level. Latencies in ms; tok/s per stream is the median."""

    endpoint: str
    label: str
    engine: str
    concurrency: int
    n_sent: int
    n_ok: int
    n_errors: int
    wall_s: float
    tokens: int
    total_tok_s: float
    ttft_p50: float | None
    ttft_p90: float | None
    gap_p50: float | None  # between streamed chunks
    gap_p90: float | None
    tpot: float | None  # mean ms per output token after the first chunk
    stream_tok_s: float | None
    acceptance: float | None  # accepted / drafted
    drafted: float | None
    accepted: float | None
    accept_length: float | None  # tokens per verify step incl. the bonus token, where known
    acceptance_from: str  # responses | /metrics counters | /metrics gauge (last batch) | none
    server: ServerAcceptance = field(default_factory=lambda: ServerAcceptance("none"))
    errors: list[str] = field(default_factory=list)  # distinct messages, first 5


@dataclass
class EndpointRun:
    info: EndpointInfo
    levels: list[LevelSummary] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list)
    failure: str | None = None  # why the run stopped early


class EndpointDown(Exception):
    """The endpoint stopped answering or fails everything: its run ends (message: one line)."""


class LevelDown(EndpointDown):
    """EndpointDown in the middle of a level, with the level's requests so far."""

    def __init__(self, msg: str, records: list[RequestRecord], wall: float):
        super().__init__(msg)
        self.records, self.wall = records, wall


def _q(x: list[float], q: float) -> float | None:
    return float(np.quantile(x, q)) if x else None


def summarize(info: EndpointInfo, c: int, records: list[RequestRecord], wall: float,
              server: ServerAcceptance) -> LevelSummary:
    """A level's summary from its requests and what /metrics said around it."""
    ok = [r for r in records if r.ok]
    tokens = sum(r.n_tokens for r in ok)
    ttft = [1e3 * r.ttft for r in ok if r.ttft is not None]
    gaps = [1e3 * g for r in ok for g in r.gaps]
    decode = [(r.n_tokens - 1, r.t_last - r.ttft) for r in ok
              if r.ttft is not None and r.n_tokens > 1 and r.t_last > r.ttft]
    stream = [r.tok_s for r in ok if r.tok_s]
    with_spec = [r for r in ok if r.drafted is not None]
    if with_spec:
        drafted = sum(r.drafted for r in with_spec)
        accepted = sum(r.accepted or 0 for r in with_spec)
        steps = [r.spec_steps for r in with_spec]
        length = (1 + accepted / sum(steps)) if None not in steps and sum(steps) else None
        src, rate = "responses", (accepted / drafted if drafted else None)
    elif server.source == "counters":
        drafted, accepted, rate, length = (server.drafted, server.accepted, server.rate,
                                           server.accept_length)
        src = "/metrics counters"
    elif server.source == "gauge":
        drafted = accepted = None
        rate, length, src = server.rate, server.accept_length, "/metrics gauge (last batch)"
    else:
        drafted = accepted = rate = length = None
        src = "none"
    return LevelSummary(
        info.url, info.label, info.engine, c, len(records), len(ok), len(records) - len(ok),
        wall, tokens, tokens / wall if wall > 0 else 0.0, _q(ttft, 0.5), _q(ttft, 0.9),
        _q(gaps, 0.5), _q(gaps, 0.9),
        1e3 * sum(t for _, t in decode) / sum(n for n, _ in decode) if decode else None,
        float(np.median(stream)) if stream else None, rate, drafted, accepted, length, src,
        server, list(dict.fromkeys(r.error for r in records if r.error))[:5])


def _error_text(resp_text: str, status: int, content_type: str) -> str:
    try:
        err = json.loads(resp_text).get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return f"HTTP {status}: {str(msg).splitlines()[0][:200]}"
    except (ValueError, AttributeError):
        pass
    kind = content_type.split(";")[0] or "no content type"
    return f"HTTP {status} ({kind})"


class Client:
    """One endpoint's HTTP client: probing, /metrics and streamed requests."""

    def __init__(self, url: str, opts: EndpointOptions):
        self.url, self.opts = url, opts
        self.seen_engine: str | None = None  # the engine whose speculation fields came back
        headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
        self.http = httpx.AsyncClient(base_url=url, headers=headers,
                                      timeout=httpx.Timeout(opts.time_limit, connect=10.0),
                                      limits=httpx.Limits(max_connections=MAX_CONCURRENCY))

    async def close(self) -> None:
        await self.http.aclose()

    async def probe(self, label: str) -> EndpointInfo:
        """GET /v1/models (and /metrics): is it an OpenAI-compatible server, which model, which
        engine. Raises EndpointDown with what is wrong."""
        try:
            r = await self.http.get("/v1/models", timeout=10.0)
        except httpx.TransportError as e:
            raise EndpointDown(f"cannot reach {self.url} ({type(e).__name__}: "
                               f"{str(e) or 'no answer'}); is the server running, and is this "
                               "its address?") from None
        ctype = r.headers.get("content-type", "")
        if r.status_code == 401:
            raise EndpointDown(f"{self.url} wants an API key (HTTP 401 on /v1/models); give "
                               "--api-key")
        try:
            models = r.json() if r.status_code == 200 else None
        except ValueError:
            models = None
        data = models.get("data") if isinstance(models, dict) else None
        if not isinstance(data, list):
            raise EndpointDown(f"{self.url} is not an OpenAI-compatible server (GET /v1/models "
                               f"answered HTTP {r.status_code}, "
                               f"{ctype.split(';')[0] or 'no content type'}); give the base "
                               "URL of one (http://host:port)")
        model = self.opts.model or (data[0].get("id") if data and isinstance(data[0], dict)
                                    else None)
        if not model:
            raise EndpointDown(f"{self.url} lists no model on /v1/models; give --model")
        metrics = await self.metrics()
        engine, source = self.opts.engine, "--engine"
        if engine == "auto":
            engine, source = engine_from_models(models), "/v1/models"
            if engine is None and metrics:
                engine, source = engine_from_metrics(metrics), "/metrics"
            if engine is None:
                engine, source = "unknown", "nothing"
        return EndpointInfo(self.url, label, engine, source, model, metrics is not None)

    async def metrics(self) -> dict[str, list[float]] | None:
        """GET /metrics parsed, or None where the server has none (or it is switched off)."""
        try:
            r = await self.http.get("/metrics", timeout=10.0)
        except httpx.TransportError:
            return None
        if r.status_code != 200 or "html" in r.headers.get("content-type", ""):
            return None
        parsed = parse_prometheus(r.text)
        return parsed or None

    async def alive(self) -> bool:
        try:
            await self.http.get("/v1/models", timeout=5.0)
            return True
        except httpx.TransportError:
            return False

    def body(self, prompt: Prompt, model: str) -> tuple[str, dict]:
        o = self.opts
        body = {"model": model, "max_tokens": o.max_tokens, "temperature": o.temperature,
                "seed": o.seed, "stream": True, "stream_options": {"include_usage": True}}
        if prompt.chat:
            return "/v1/chat/completions", {**body, "messages": [{"role": "user",
                                                                  "content": prompt.text}]}
        return "/v1/completions", {**body, "prompt": prompt.text}

    async def request(self, prompt: Prompt, model: str, c: int, t0: float) -> RequestRecord:
        """One streamed request; errors are recorded, a transport failure is raised."""
        rec = RequestRecord(self.url, c, prompt.id, prompt.category, ok=False,
                            t_start=time.perf_counter() - t0)
        path, body = self.body(prompt, model)
        start = time.perf_counter()
        stamps: list[float] = []
        usage_tokens = None
        try:
            async with self.http.stream("POST", path, json=body) as r:
                if r.status_code != 200:
                    rec.error = _error_text((await r.aread()).decode("utf-8", "replace"),
                                            r.status_code, r.headers.get("content-type", ""))
                    return rec
                if "text/event-stream" not in r.headers.get("content-type", ""):
                    await r.aread()
                    rec.error = ("not a stream (content type "
                                 f"{r.headers.get('content-type') or 'none'}): not an "
                                 "OpenAI-compatible server")
                    return rec
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        obj = json.loads(payload)
                    except ValueError:
                        rec.error = f"a chunk is not JSON: {payload[:80]!r}"
                        return rec
                    if not isinstance(obj, dict):
                        rec.error = f"a chunk is not a JSON object: {payload[:80]!r}"
                        return rec
                    if obj.get("error"):
                        err = obj["error"]
                        msg = err.get("message") if isinstance(err, dict) else err
                        rec.error = f"error in the stream: {str(msg).splitlines()[0][:200]}"
                        return rec
                    now = time.perf_counter()
                    for ch in obj.get("choices") or []:
                        text = (ch.get("delta") or {}).get("content") if "delta" in ch \
                            else ch.get("text")
                        if text:
                            stamps.append(now - start)
                            break
                    if isinstance(obj.get("usage"), dict):
                        usage_tokens = obj["usage"].get("completion_tokens")
                    spec = spec_from_response(obj)
                    if spec is not None:
                        self.seen_engine, s = spec[0], spec[1]
                        rec.drafted, rec.accepted, rec.spec_steps = s.drafted, s.accepted, s.steps
        except httpx.TimeoutException:
            rec.error = f"no answer within {self.opts.time_limit:g} s (--time-limit)"
            return rec
        rec.t_total = time.perf_counter() - start
        rec.n_chunks = len(stamps)
        rec.tokens_from_usage = isinstance(usage_tokens, int)
        rec.n_tokens = usage_tokens if rec.tokens_from_usage else len(stamps)
        if stamps:
            rec.ttft = stamps[0]
            rec.gaps = [b - a for a, b in zip(stamps, stamps[1:])]
            rec.t_last = stamps[-1]
            if rec.n_tokens > 1 and stamps[-1] > stamps[0]:
                rec.tok_s = (rec.n_tokens - 1) / (stamps[-1] - stamps[0])
        rec.ok = True
        return rec


async def run_level(client: Client, info: EndpointInfo, prompts: list[Prompt], c: int,
                    n: int, time_limit: float) -> tuple[list[RequestRecord], float]:
    """n requests over c concurrent streams, none started after time_limit seconds.
    Raises EndpointDown when the server stops answering."""
    records: list[RequestRecord] = []
    next_i = iter(range(n))
    t0 = time.perf_counter()
    down: list[str] = []

    async def worker() -> None:
        for i in next_i:
            if down or time.perf_counter() - t0 > time_limit:
                return
            p = prompts[i % len(prompts)]
            try:
                records.append(await client.request(p, info.model, c, t0))
            except httpx.TransportError as e:
                records.append(RequestRecord(info.url, c, p.id, p.category, ok=False,
                                             error=f"{type(e).__name__}: {e or 'connection lost'}",
                                             t_start=time.perf_counter() - t0))
                if not await client.alive():
                    down.append(f"{info.url} stopped answering at concurrency {c} after "
                                f"{sum(r.ok for r in records)} requests ({type(e).__name__})")
                    return

    await asyncio.gather(*(worker() for _ in range(c)))
    wall = time.perf_counter() - t0
    if down:
        raise LevelDown(down[0], records, wall)
    return records, wall
