"""The OpenAI-compatible HTTP app: `create_app(engine, name)` and `serve(...)` (uvicorn)."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from draftwise.config import K_MAX, SamplingConfig
from draftwise.engine import Engine
from draftwise.errors import DraftwiseError
from draftwise.server import errors
from draftwise.server.asgi import BodyLimit, JobStream
from draftwise.server.errors import APIError
from draftwise.server.metrics import Metrics
from draftwise.server.openai_format import DONE, Shape, speculative, sse
from draftwise.server.schemas import ChatRequest, CompletionRequest
from draftwise.server.worker import Job, QueueFull, Worker

log = logging.getLogger("draftwise.server")
MAX_BODY = 2 << 20  # bytes; a full 32k-token prompt as ids or text fits many times over
_ENDPOINTS = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/metrics", "/health"}


def create_app(engine: Engine, model_name: str, *, queue_size: int = 16, timeout_s: float = 300.0,
               default_k: int | None = None) -> FastAPI:
    """An app serving `engine` as `model_name`. queue_size: requests that may wait while one runs;
    timeout_s: per request, queue wait included; default_k: fixed K for requests without draft_k
    (None keeps the engine's own policy)."""
    if queue_size < 1:
        raise DraftwiseError(f"the queue size must be >= 1, got {queue_size}")
    if default_k is not None and not 1 <= default_k <= K_MAX:
        raise DraftwiseError(f"K must be between 1 and {K_MAX}, got {default_k}")
    metrics = Metrics()
    worker = Worker(engine, metrics, queue_size=queue_size, default_k=default_k)
    n_ctx = engine.target.n_ctx
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.stop()

    app = FastAPI(title="draftwise", lifespan=lifespan, strict_content_type=False,
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.state.worker, app.state.metrics, app.state.engine = worker, metrics, engine

    def count(request: Request, status: int) -> None:
        path = request.url.path
        if path.startswith("/v1/models/"):
            path = "/v1/models"
        metrics.requests.labels(path if path in _ENDPOINTS else "other", str(status)).inc()

    errors.install(app, count)

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": started, "owned_by": "draftwise"}

    @app.get("/health")
    async def health(request: Request):
        count(request, 200)
        return {"status": "ok", "model": model_name, "queue_depth": worker.depth,
                "running": worker.running is not None}

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
        return Job(**kw, stop=body.stops, draft_k=body.draft_k, timeout_s=timeout_s,
                   sampling=SamplingConfig(temperature=temp, top_p=top_p, seed=seed))

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
          log_level: str = "info") -> None:
    """Serve until interrupted (blocks). Binds to loopback unless `host` says otherwise."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(engine, model_name, queue_size=queue_size, timeout_s=timeout_s,
                     default_k=default_k)
    log.info("serving %s on http://%s:%d/v1 (queue %d)", model_name, host, port, queue_size)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
