"""The one thread that owns the engine, and the bounded FIFO of requests waiting for it.

The thread runs an iteration loop: admit waiting requests while the batch has free sequences,
drop cancelled ones (their sequence is free for the next), step the batch once (one batched
round; prompt chunks of new requests ride along), send each request its text."""

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
from draftwise.engine import Batch, Engine, Round, Run
from draftwise.errors import DraftwiseError
from draftwise.policy import FixedK, KPolicy
from draftwise.policy.load import LoadAwareK
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
        self.t_arrival = self.t_admit = time.monotonic()
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
    """Runs up to `parallel` jobs at once, admitted in arrival order, on a single thread that owns
    the engine. chunk: prompt tokens fed per iteration while others decode."""

    def __init__(self, engine: Engine, metrics: Metrics, queue_size: int = 16,
                 default_k: int | None = None, parallel: int = 1, chunk: int = 256):
        if parallel > engine.n_seq:
            raise DraftwiseError(
                f"--parallel {parallel} needs models holding {parallel} sequences, but "
                f"{'the draft' if engine.target.n_seq >= parallel else 'the target'} holds "
                f"{engine.n_seq}: n-gram, hybrid and bridged drafts and the transformers backend "
                "serve one sequence at a time; use --parallel 1 or a GGUF draft of the same "
                "vocabulary")
        self.engine, self.metrics = engine, metrics
        self.queue_size, self.default_k, self.parallel = queue_size, default_k, parallel
        self.batch = Batch(engine, parallel, chunk, LoadAwareK() if parallel > 1 else None)
        self._pending: deque[Job] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.active: dict[Job, Run] = {}  # jobs being generated (owned by the engine thread)
        self._first: set[Job] = set()  # active jobs that have sent text
        self._job_s = 1.0  # moving average of job durations, for Retry-After

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def n_running(self) -> int:
        return len(self.active)

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
        """Drop a waiting job, or stop a running one before the next iteration."""
        job.cancelled.set()
        with self._cv:
            if job in self._pending:
                self._pending.remove(job)
                self.metrics.queue_depth.set(len(self._pending))

    @property
    def stopping(self) -> bool:
        return self._stopping

    def drain(self) -> None:
        """Stop admitting: new and queued requests get 503; the running ones go on."""
        with self._cv:
            self._stopping = True
            for job in self._pending:
                job.emit("error", APIError(503, "the server is shutting down",
                                           code="shutting_down"))
            self._pending.clear()
            self.metrics.queue_depth.set(0)
            self._cv.notify_all()

    def cancel_running(self) -> None:
        """Stop the running requests after the current iteration; _loop answers them 503."""
        with self._cv:
            for job in list(self.active):
                job.cancelled.set()

    def stop(self, timeout: float = 10.0) -> None:
        """drain(), cancel the running requests and wait up to `timeout` s for the engine thread."""
        self.drain()
        self.cancel_running()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self.active and not self._stopping:
                    self._cv.wait()
                if self._stopping and not self.active:
                    return
                admit = [self._pending.popleft()
                         for _ in range(min(self.batch.free, len(self._pending)))]
                self.metrics.queue_depth.set(len(self._pending))
            for job in admit:
                self._admit(job)
            for job in [j for j in self.active if j.cancelled.is_set()]:
                self._finish(job, None)
            self.metrics.running.set(len(self.active))
            if not self.active:
                continue
            try:
                stepped = self.batch.step()
                self.metrics.batch_size.observe(len(stepped))
                for job, (run, r) in zip(self._jobs_of(stepped), stepped):
                    self._deliver(job, run, r)
            except Exception as e:  # the engine failed: every request in the batch hears why
                log.exception("a batched round failed")
                err = (APIError(400, str(e), code="invalid_request") if isinstance(e, DraftwiseError)
                       else APIError(500, f"generation failed: {type(e).__name__}: {e}"))
                for job in list(self.active):
                    self._finish(job, ("error", err))

    def _jobs_of(self, stepped: list[tuple[Run, Round]]) -> list[Job]:
        by_run = {id(run): job for job, run in self.active.items()}
        return [by_run[id(run)] for run, _ in stepped]

    def _admit(self, job: Job) -> None:
        """Validate a job and add its run to the batch; a bad one hears its error at once."""
        if job.cancelled.is_set():
            return
        try:
            run = self._new_run(job)
        except APIError as e:
            job.emit("error", e)
            return
        except DraftwiseError as e:
            job.emit("error", APIError(400, str(e), code="invalid_request"))
            return
        job.t_admit = time.monotonic()
        job.emit("start", len(run.ids))
        self.batch.add(run)
        with self._cv:  # cancel_running reads it from other threads
            self.active[job] = run

    def _new_run(self, job: Job) -> Run:
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
        return Run(eng, ids, cfg, self._policy(job), accept=self._accept(job))

    def _policy(self, job: Job) -> KPolicy | None:
        """A request's K: its draft_k or the server's fixed K; else the engine's policy when one
        request runs at a time (adaptive K learns across them) or K is fixed; else None: the
        batch's load-aware K."""
        k = job.draft_k or self.default_k
        if k and self.engine.drafter is not None:
            return FixedK(k)
        if self.parallel == 1 or not self.engine.spec.adaptive:
            return self.engine.policy
        return None

    def _accept(self, job: Job) -> Acceptance:
        """A request's acceptance mode: its own (the app checked it against its sampling), else
        the server's (serve --accept) where it applies: a sampled request to a server whose
        default is topk is verified exactly (its `speculative` object says so). Exact when
        nothing is drafted."""
        rule = self.engine.spec.rule
        if self.engine.drafter is None:
            return EXACT
        return job.accept or (rule if rule.applies(job.sampling.greedy) else EXACT)

    def _deliver(self, job: Job, run: Run, r: Round) -> None:
        """Send a round's text; finish the job when its run is done."""
        self.metrics.observe_round(r.k, r.n_accepted)
        self._send(job, run.push(r))
        if run.done:
            self._send(job, run.flush())
            self._finish(job, ("done", run.stats))

    def _send(self, job: Job, text: str) -> None:
        if not text:
            return
        if job not in self._first:
            self._first.add(job)
            self.metrics.ttft.observe(time.monotonic() - job.t_arrival)
        job.emit("delta", text)

    def _finish(self, job: Job, last: tuple[str, Any] | None) -> None:
        """Free the job's sequence; send `last` (None: it was cancelled, or 503 when the server
        is shutting down)."""
        with self._cv:
            run = self.active.pop(job)
        self._first.discard(job)
        self.batch.remove(run)
        st = run.stats
        self.metrics.observe(st)
        self.metrics.running.set(len(self.active))
        self._job_s = 0.8 * self._job_s + 0.2 * (time.monotonic() - job.t_admit)
        if st.low_acceptance:
            log.warning("request %d: acceptance stayed below 0.5 (%.2f over %d rounds); the draft "
                        "diverges from the target on this prompt", job.id, st.alpha, st.n_rounds)
        if last is None:
            log.info("request %d stopped after %d tokens (client gone or timed out)", job.id,
                     st.n_generated)
            if self._stopping:  # cut by shutdown: the client hears why
                last = ("error", APIError(503, "the server shut down before the reply was "
                                               "complete", code="shutting_down"))
        if last:
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
