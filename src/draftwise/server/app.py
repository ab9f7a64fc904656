"""The OpenAI-compatible HTTP app: `create_app(engine, name)` and `serve(...)` (uvicorn)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from draftwise.config import SamplingConfig, check_k
from draftwise.engine import Engine
from draftwise.errors import DraftwiseError
from draftwise.server import errors
from draftwise.server.asgi import BodyLimit, JobStream
from draftwise.server.auth import ApiKeyAuth, exposure_warning
from draftwise.server.errors import APIError
from draftwise.server.metrics import Metrics
from draftwise.server.openai_format import DONE, Shape, speculative, sse
from draftwise.server.schemas import ChatRequest, CompletionRequest
from draftwise.server.worker import Job, QueueFull, Worker

log = logging.getLogger("draftwise.server")
MAX_BODY = 2 << 20  # bytes; a full 32k-token prompt as ids or text fits many times over
_ENDPOINTS = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/metrics", "/health"}


def create_app(engine: Engine, model_name: str, *, queue_size: int = 16, timeout_s: float = 300.0,
               default_k: int | None = None, api_keys: Sequence[str] = (),
               cors_origins: Sequence[str] = (), parallel: int = 1) -> FastAPI:
    """An app serving `engine` as `model_name`. queue_size: requests that may wait while others
    run; timeout_s: per request, queue wait included; default_k: fixed K for requests without
    draft_k (None keeps the engine's own policy, or load-aware K when parallel > 1 and K is
    adaptive); api_keys: if any, every endpoint but /health needs `Authorization: Bearer KEY`;
    cors_origins: origins browsers may call from; parallel: requests decoded together (the
    engine's models must hold that many sequences)."""
    if queue_size < 1:
        raise DraftwiseError(f"the queue size must be >= 1, got {queue_size}")
    if default_k is not None:
        check_k(default_k)
    metrics = Metrics()
    worker = Worker(engine, metrics, queue_size=queue_size, default_k=default_k, parallel=parallel)
    n_ctx = engine.target.n_ctx
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.stop()

    app = FastAPI(title="draftwise", lifespan=lifespan, strict_content_type=False,
                  docs_url=None, redoc_url=None)
    app.state.worker, app.state.metrics, app.state.engine = worker, metrics, engine

    def count_path(path: str, status: int) -> None:
        if path.startswith("/v1/models/"):
            path = "/v1/models"
        metrics.requests.labels(path if path in _ENDPOINTS else "other", str(status)).inc()

    def count(request: Request, status: int) -> None:
        count_path(request.url.path, status)

    # The last added is the outermost: CORS answers preflights, then keys, then the body limit.
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    if api_keys:
        app.add_middleware(ApiKeyAuth, keys=list(api_keys), reject=count_path)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"], max_age=600)

    errors.install(app, count)

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": started, "owned_by": "draftwise"}

    @app.get("/health")
    async def health(request: Request):
        if worker.stopping:  # load balancers stop routing here
            count(request, 503)
            return JSONResponse({"status": "stopping", "model": model_name}, status_code=503)
        count(request, 200)
        return {"status": "ok", "model": model_name, "queue_depth": worker.depth,
                "running": worker.n_running > 0}

    @app.get("/metrics")
    async def prometheus(request: Request):
        count(request, 200)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        count(request, 200)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):
        if model_id != model_name:
            raise APIError(404, f"the model `{model_id}` does not exist", param="model",
                           code="model_not_found")
        count(request, 200)
        return model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        job = make_job(body, prompt=body.prompt, messages=None, max_tokens=body.max_tokens)
        return await generate(request, body, job)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        job = make_job(body, prompt=None, messages=[m.as_dict() for m in body.messages],
                       max_tokens=body.limit)
        return await generate(request, body, job)

    def make_job(body, **kw) -> Job:
        if body.model is not None and body.model != model_name:
            raise APIError(404, f"the model `{body.model}` does not exist; this server serves "
                           f"`{model_name}`", param="model", code="model_not_found")
        if kw["max_tokens"] is not None and kw["max_tokens"] >= n_ctx:
            raise APIError(400, f"max_tokens is {kw['max_tokens']} but the context holds {n_ctx} "
                           "tokens, prompt included", param="max_tokens",
                           code="context_length_exceeded")
        temp = 1.0 if body.temperature is None else float(body.temperature)
        top_p = 1.0 if body.top_p is None else float(body.top_p)
        seed = None if body.seed is None else body.seed % 2**64
        sampling = SamplingConfig(temperature=temp, top_p=top_p, seed=seed)
        if body.accept is not None:
            try:
                body.accept.check(sampling.greedy)
            except DraftwiseError as e:
                raise APIError(400, str(e), param="accept", code="invalid_value") from None
        return Job(**kw, stop=body.stops, draft_k=body.draft_k, timeout_s=timeout_s,
                   sampling=sampling, accept=body.accept)

    async def generate(request: Request, body, job: Job):
        try:
            worker.submit(job)
        except QueueFull:
            raise APIError(429, f"the server is busy ({worker.depth} requests waiting); retry "
                           "later", code="queue_full",
                           headers={"Retry-After": str(worker.retry_after())}) from None
        shape = Shape(model_name, chat=isinstance(body, ChatRequest))
        streaming = False
        try:
            await job.next(request)  # "start": the prompt is valid and generation began
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                state = {"status": 499}

                def closed() -> None:
                    worker.cancel(job)
                    count(request, state["status"])

                streaming = True
                return JobStream(events(job, shape, include_usage, state), closed)
            text = []
            while True:
                kind, value = await job.next(request)
                if kind != "delta":
                    break
                text.append(value)
        finally:
            if not streaming:
                worker.cancel(job)  # a no-op once done; stops the engine on errors and timeouts
        count(request, 200)
        return JSONResponse(shape.full("".join(text), value))

    async def events(job: Job, shape: Shape, include_usage: bool, state: dict):
        if shape.chat:
            yield sse(shape.chunk(role=True))
        try:
            while True:
                kind, value = await job.next()
                if kind == "delta":
                    yield sse(shape.chunk(value))
                    continue
                last = shape.chunk(finish=value.finish_reason)
                last["speculative"] = speculative(value)
                yield sse(last)
                if include_usage:
                    yield sse(shape.usage_chunk(value))
                break
            state["status"] = 200
        except APIError as e:  # timeout or failure mid-stream: an error event, as OpenAI sends
            state["status"] = e.status
            yield sse(e.body())
        yield DONE

    return app


def serve(engine: Engine, model_name: str, host: str = "127.0.0.1", port: int = 8000,
          queue_size: int = 16, timeout_s: float = 300.0, default_k: int | None = None,
          log_level: str = "info", api_keys: Sequence[str] = (), cors_origins: Sequence[str] = (),
          grace_s: float = 10.0, parallel: int = 1) -> None:
    """Serve until SIGTERM or SIGINT (blocks), then stop cleanly and return (see _run_until_signal).
    Binds to loopback unless `host` says otherwise."""
    import uvicorn

    if grace_s < 0:
        raise DraftwiseError(f"--grace must be 0 or more seconds, got {grace_s}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # the CLI configured logging at WARNING: the server's lines still show
    app = create_app(engine, model_name, queue_size=queue_size, timeout_s=timeout_s,
                     default_k=default_k, api_keys=api_keys, cors_origins=cors_origins,
                     parallel=parallel)
    if warning := exposure_warning(host, port, api_keys):
        log.warning(warning)
    if not engine.spec.rule.exact:
        log.warning("requests without `accept` are verified with %s where it applies: lossy, the "
                    "output is not the target's own", engine.spec.rule.name)
    log.info("serving %s on http://%s:%d/v1 (%d in parallel, queue %d%s)", model_name, host, port,
             parallel, queue_size, ", API key required" if api_keys else "")
    # uvicorn's own wait for open responses outlasts the grace period, so a stream cut at the
    # end of it still delivers its error event and [DONE].
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=grace_s + 5))
    _run_until_signal(server, app.state.worker, grace_s)
    if not server.started:
        raise DraftwiseError(f"could not serve on {host}:{port} (uvicorn's error above says why; "
                             "is the port in use?)")


def _run_until_signal(server, worker: Worker, grace_s: float) -> None:
    """Run uvicorn in a thread while this (main) thread owns SIGTERM and SIGINT, alike.

    On the first signal: no new requests (queued ones get 503), the running one has grace_s
    seconds to finish before it is cut (its stream ends with an error event and [DONE]); then
    uvicorn closes and this returns, so that the caller saves adaptive K's costs and exits 0.
    A second signal cuts the running request and stops at once. (uvicorn in the main thread
    would re-raise SIGTERM after its shutdown: exit 143, nothing saved.)
    """
    if threading.current_thread() is not threading.main_thread():
        # Only the main thread gets signals: whoever started this thread stops uvicorn itself.
        server.run()
        worker.stop()
        return
    signals: list[int] = []
    old = {s: signal.signal(s, lambda sig, _frame: signals.append(sig))
           for s in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.run, name="draftwise-http")
    thread.start()
    deadline = None
    try:
        while thread.is_alive():
            thread.join(0.1)
            if signals and deadline is None:
                log.info("%s: stopping; no new requests, the running one has %g s to finish",
                         signal.Signals(signals[0]).name, grace_s)
                worker.drain()
                deadline = time.monotonic() + grace_s
                server.should_exit = True
            if deadline is not None and (time.monotonic() >= deadline or len(signals) > 1):
                worker.cancel_running()
                if len(signals) > 1:
                    server.force_exit = True
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        worker.stop()  # the engine is idle before anyone reads its state
