"""Prometheus metrics of one app, in its own registry (no process-wide globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from draftwise.stats import Stats

_RATE = tuple(i / 10 for i in range(1, 11))
_TAU = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 12, 16, 24, 33)
_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
_SECONDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("draftwise_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("draftwise_prompt_tokens", "Prompt tokens processed",
                                     registry=r)
        self.tokens = Counter("draftwise_generated_tokens", "Tokens generated", registry=r)
        self.acceptance = Histogram("draftwise_acceptance_rate",
                                    "Accepted / drafted tokens of each request", buckets=_RATE,
                                    registry=r)
        self.tau = Histogram("draftwise_tokens_per_round",
                             "Tokens per target forward of each request", buckets=_TAU, registry=r)
        self.time_per_token = Histogram("draftwise_time_per_token_seconds",
                                        "Decode seconds per generated token of each request",
                                        buckets=_SECONDS, registry=r)
        self.ttft = Histogram("draftwise_time_to_first_token_seconds",
                              "From arrival (queue wait included) to the first text",
                              buckets=_SECONDS + (10, 30, 60), registry=r)
        self.queue_depth = Gauge("draftwise_queue_depth", "Requests waiting for the engine",
                                 registry=r)
        self.running = Gauge("draftwise_requests_running", "Requests being generated",
                             registry=r)
        self.batch_size = Histogram("draftwise_batch_size",
                                    "Sequences decoding together in each iteration",
                                    buckets=_BATCH, registry=r)
        # Speculative counters named as vLLM's (vllm:spec_decode_*), under this server's prefix.
        self.spec_drafts = Counter("draftwise_spec_decode_num_drafts",
                                   "Rounds that drafted (one per sequence and round)", registry=r)
        self.spec_draft_tokens = Counter("draftwise_spec_decode_num_draft_tokens",
                                         "Drafted tokens", registry=r)
        self.spec_accepted = Counter("draftwise_spec_decode_num_accepted_tokens",
                                     "Drafted tokens the target accepted", registry=r)
        self.low_acceptance = Counter("draftwise_low_acceptance_alarms",
                                      "Requests whose rolling acceptance fell below 0.5",
                                      registry=r)

    def observe(self, st: Stats) -> None:
        """Record one finished (or stopped) generation."""
        self.prompt_tokens.inc(st.n_prompt)
        self.tokens.inc(st.n_generated)
        if st.n_drafted:
            self.acceptance.observe(st.alpha)
        if st.n_rounds:
            self.tau.observe(st.tau)
        if st.n_generated and st.t_decode > 0:
            self.time_per_token.observe(st.t_decode / st.n_generated)
        if st.low_acceptance:
            self.low_acceptance.inc()

    def observe_round(self, k: int, n_accepted: int) -> None:
        """Count one sequence's round: k drafted, n_accepted kept."""
        if k:
            self.spec_drafts.inc()
            self.spec_draft_tokens.inc(k)
            self.spec_accepted.inc(n_accepted)

    def render(self) -> bytes:
        return generate_latest(self.registry)
