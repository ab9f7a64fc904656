"""The one thread that owns the engine, and the bounded FIFO of requests waiting for it."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from draftwise.acceptance import EXACT, Acceptance
from draftwise.config import GenerateConfig, SamplingConfig
from draftwise.engine import Engine
from draftwise.errors import DraftwiseError
from draftwise.policy import FixedK
from draftwise.server.errors import APIError
from draftwise.server.metrics import Metrics

log = logging.getLogger("draftwise.server")
POLL_S = 0.2  # how often a request waiting for its first event checks for a disconnect
_ids = itertools.count(1)


class QueueFull(Exception):
    pass


@dataclass(eq=False)
class Job:
    """One request. Created inside the event loop; the worker sends it events thread-safely.

    Events: ("start", n_prompt), ("delta", text), ("done", Stats), ("error", APIError).
    accept: the request's acceptance mode, checked against its sampling; None: the server's.
    """

    prompt: str | list[int] | None
    messages: list[dict] | None
    max_tokens: int | None
    stop: tuple[str, ...]
    sampling: SamplingConfig
    draft_k: int | None
    timeout_s: float
    accept: Acceptance | None = None
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.t_arrival = time.monotonic()
        self.deadline = self.t_arrival + self.timeout_s
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()

    def emit(self, kind: str, value: Any = None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (shutdown)
            self.cancelled.set()

    async def next(self, request: Request | None = None) -> tuple[str, Any]:
        """The next event; raises its APIError, 504 past the deadline, 499 if `request` left."""
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise APIError(504, "the request timed out", code="timeout")
            try:
                kind, value = await asyncio.wait_for(
                    self._events.get(), min(left, POLL_S) if request is not None else left)
            except TimeoutError:
                if request is not None and await request.is_disconnected():
                    raise APIError(499, "the client closed the request") from None
                continue
            if kind == "error":
                raise value
            return kind, value


class Worker:
    """Runs jobs one at a time, in arrival order, on a single thread that owns the engine."""

    def __init__(self, engine: Engine, metrics: Metrics, queue_size: int = 16,
                 default_k: int | None = None):
        self.engine, self.metrics = engine, metrics
        self.queue_size, self.default_k = queue_size, default_k
        self._pending: deque[Job] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.running: Job | None = None
        self._job_s = 1.0  # moving average of job durations, for Retry-After

    @property
    def depth(self) -> int:
        return len(self._pending)

    def retry_after(self) -> int:
        return max(1, math.ceil(self._job_s))

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stopping:
                raise APIError(503, "the server is shutting down", code="shutting_down")
            if len(self._pending) >= self.queue_size:
                raise QueueFull
            self._pending.append(job)
            self.metrics.queue_depth.set(len(self._pending))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="draftwise-engine",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """Drop a waiting job, or stop a running one after its current round."""
        job.cancelled.set()
        with self._cv:
            if job in self._pending:
                self._pending.remove(job)
                self.metrics.queue_depth.set(len(self._pending))

    @property
    def stopping(self) -> bool:
        return self._stopping

    def drain(self) -> None:
        """Stop admitting: new and queued requests get 503; the running one goes on."""
        with self._cv:
            self._stopping = True
            for job in self._pending:
                job.emit("error", APIError(503, "the server is shutting down",
                                           code="shutting_down"))
            self._pending.clear()
            self.metrics.queue_depth.set(0)
            self._cv.notify_all()

    def cancel_running(self) -> None:
        """Stop the running request after its current round; _loop answers it 503."""
        with self._cv:
            if self.running:
                self.running.cancelled.set()

    def stop(self, timeout: float = 10.0) -> None:
        """drain(), cancel the running request and wait up to `timeout` s for the engine thread."""
        self.drain()
        self.cancel_running()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                job = self.running = self._pending.popleft()
                self.metrics.queue_depth.set(len(self._pending))
            self.metrics.running.set(1)
            t0 = time.monotonic()
            try:
                last = self._run(job)
            except APIError as e:
                last = ("error", e)
            except DraftwiseError as e:
                last = ("error", APIError(400, str(e), code="invalid_request"))
            except Exception as e:
                log.exception("request %d failed", job.id)
                last = ("error", APIError(500, f"generation failed: {type(e).__name__}: {e}"))
            self._job_s = 0.8 * self._job_s + 0.2 * (time.monotonic() - t0)
            self.metrics.running.set(0)
            with self._cv:
                self.running = None
                if last is None and self._stopping:  # cut by shutdown: the client hears why
                    last = ("error", APIError(503, "the server shut down before the reply was "
                                                   "complete", code="shutting_down"))
            if last:  # after `running` is cleared: a client that got its answer sees an idle engine
                job.emit(*last)

    def _prompt_ids(self, job: Job) -> list[int]:
        eng = self.engine
        prompt = job.prompt
        if job.messages is not None:
            try:
                prompt = eng.target.apply_chat_template(job.messages)
            except DraftwiseError:
                raise
            except Exception as e:
                raise APIError(400, f"the chat template rejected these messages: {e}",
                               param="messages") from e
        if isinstance(prompt, list):
            n = eng.target.vocab.n_tokens
            bad = next((t for t in prompt if not 0 <= t < n), None)
            if bad is not None:
                raise APIError(400, f"token id {bad} is outside the vocabulary (0..{n - 1})",
                               param="prompt", code="invalid_prompt")
        try:
            return eng.prompt_ids(prompt)
        except DraftwiseError as e:
            raise APIError(400, str(e), param="messages" if job.messages is not None else "prompt",
                           code="invalid_prompt") from e

    def _run(self, job: Job) -> tuple[str, Any] | None:
        """Generate, sending deltas; returns the last event (None if the job was cancelled)."""
        if job.cancelled.is_set():
            return None
        eng = self.engine
        ids = self._prompt_ids(job)
        n_ctx = eng.target.n_ctx
        room = n_ctx - len(ids)
        max_tokens = job.max_tokens or room
        if max_tokens > room:
            raise APIError(400, f"the prompt has {len(ids)} tokens and max_tokens is {max_tokens}, "
                           f"but the context holds {n_ctx}; lower max_tokens or shorten the prompt",
                           param="max_tokens", code="context_length_exceeded")
        cfg = GenerateConfig(max_tokens=max_tokens, stop=job.stop, sampling=job.sampling)
        job.emit("start", len(ids))
        k = job.draft_k or self.default_k
        # The server's mode (serve --accept) applies where it is defined: a sampled request to a
        # server whose default is topk is verified exactly (its `speculative` object says so).
        accept = job.accept or (eng.spec.rule if eng.spec.rule.applies(job.sampling.greedy)
                                else EXACT)
        run = eng.run(ids, cfg, policy=FixedK(k) if k and eng.drafter is not None else None,
                      accept=accept)
        deltas = iter(run)
        first = True
        try:
            for delta in deltas:
                if first:
                    self.metrics.ttft.observe(time.monotonic() - job.t_arrival)
                    first = False
                job.emit("delta", delta)
                if job.cancelled.is_set():
                    break
        finally:
            deltas.close()
        st = run.stats
        self.metrics.observe(st)
        if st.low_acceptance:
            log.warning("request %d: acceptance stayed below 0.5 (%.2f over %d rounds); the draft "
                        "diverges from the target on this prompt", job.id, st.alpha, st.n_rounds)
        if job.cancelled.is_set():
            log.info("request %d stopped after %d tokens (client gone or timed out)", job.id,
                     st.n_generated)
            return None
        return "done", st
