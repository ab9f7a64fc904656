"""`bench --endpoint`: the parsers on text the engines emit (tests/data, see SOURCES.md), a live
`draftwise serve` on the tiny models read back exactly, stand-in llama-server / vLLM / SGLang
servers speaking their recorded formats over real HTTP, and servers that fail."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from draftwise.bench.endpoint import EndpointOptions, parse_concurrency
from draftwise.bench.endpoint_cmd import run_endpoint_bench
from draftwise.bench.options import PromptOptions
from draftwise.bench.serverstats import (
    Spec,
    acceptance_from_metrics,
    engine_from_metrics,
    parse_prometheus,
    spec_from_response,
    total,
)
from draftwise.errors import DraftwiseError

DATA = Path(__file__).parent / "data"
EXE = [sys.executable, "-m", "draftwise.cli"]
LLAMA_METRICS = (DATA / "llamaserver_metrics.txt").read_text()
LLAMA_LAST = json.loads((DATA / "llamaserver_stream_last_chunk.json").read_text())
VLLM_METRICS = (DATA / "vllm_metrics.txt").read_text()
VLLM_RESPONSE = json.loads((DATA / "vllm_response_spec.json").read_text())
SGLANG_METRICS = (DATA / "sglang_metrics.txt").read_text()


@pytest.fixture
def prompts(tmp_path) -> PromptOptions:
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "def quicksort(a):"}\n{"turns": ["The quick brown fox"]}\n'
                 '{"prompt": "for i in range(10):"}\n')
    return PromptOptions(prompt_file=str(p))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ parsers on recorded text


def test_llama_server_samples_agree():
    m = parse_prometheus(LLAMA_METRICS)
    assert engine_from_metrics(m) == "llama-server"
    acc = acceptance_from_metrics("llama-server", {}, m)
    assert (acc.source, acc.drafted, acc.accepted, acc.steps) == ("counters", 36, 23, 12)
    assert acc.rate == pytest.approx(23 / 36) and acc.accept_length == pytest.approx(1 + 23 / 12)
    assert total(m, "llamacpp:spec_decode_num_accepted_tokens_per_pos_total") == 23
    assert total(m, "llamacpp:predicted_tokens_seconds") == pytest.approx(52.9449)
    assert spec_from_response(LLAMA_LAST) == ("llama-server", Spec(36, 23))
    no_draft = {"timings": {k: v for k, v in LLAMA_LAST["timings"].items()
                            if not k.startswith("draft")}}
    assert spec_from_response(no_draft) == ("llama-server", Spec(0, 0))  # it drafted nothing
    same = acceptance_from_metrics("llama-server", m, m)  # nothing ran in between
    assert (same.drafted, same.rate) == (0, None)


def test_vllm_samples_agree():
    """vLLM's docs: the per-request fields summed reconcile with the /metrics counters."""
    m = parse_prometheus(VLLM_METRICS)
    assert engine_from_metrics(m) == "vllm"
    acc = acceptance_from_metrics("vllm", {}, m)
    engine, spec = spec_from_response(VLLM_RESPONSE)
    assert engine == "vllm" and spec == Spec(129, 10, 43)
    assert (acc.drafted, acc.accepted, acc.steps) == (spec.drafted, spec.accepted, spec.steps)
    sd = VLLM_RESPONSE["metrics"]["speculative_decoding"]
    assert acc.rate == pytest.approx(sd["draft_acceptance_rate"])
    assert acc.accept_length == pytest.approx(sd["mean_acceptance_length"])
    assert m["vllm:iteration_tokens_total_bucket"] == [3.0] * 8  # one value per label set


def test_sglang_gauges():
    m = parse_prometheus(SGLANG_METRICS)
    assert engine_from_metrics(m) == "sglang"
    acc = acceptance_from_metrics("sglang", None, m)
    assert (acc.source, acc.rate, acc.accept_length, acc.drafted) == ("gauge", 0.7, 3.1, None)
    two_ranks = parse_prometheus(SGLANG_METRICS + 'sglang:spec_accept_rate{model_name="x"} 0.5\n')
    assert acceptance_from_metrics("sglang", None, two_ranks).rate == pytest.approx(0.6)


def test_prometheus_parser_skips_what_it_cannot_read():
    m = parse_prometheus('# HELP x y\nbad line\nname_only\na{l="1 2"} 3 1700000000\n'
                         'b NaN\nc +Inf\nd 1e+03\n')
    assert m == {"a": [3.0], "d": [1000.0]}


@pytest.mark.parametrize("spec, message", [("0,4", "1-512"), ("a,b", "numbers like"), ("", "1-512")])
def test_bad_concurrency(spec, message):
    with pytest.raises(DraftwiseError, match=message):
        parse_concurrency(spec)


def test_bad_options():
    assert parse_concurrency("4,1,4") == (4, 1)
    with pytest.raises(DraftwiseError, match="--engine must be one of"):
        EndpointOptions(("http://x",), engine="tgi")
    with pytest.raises(DraftwiseError, match="http"):
        EndpointOptions(("localhost:8000",))
    assert EndpointOptions(("http://h:1/v1/",)).endpoints == ("http://h:1",)


# ------------------------------------------------------------------ a live draftwise serve


class Live:
    """`draftwise serve`'s app on the tiny models, on an ephemeral port, in a thread; every
    generation the server finishes is recorded as the server saw it (Metrics.observe)."""

    def __init__(self, tiny_models):
        import uvicorn

        from draftwise.loader import build_engine
        from draftwise.server import create_app

        self.app = create_app(build_engine(str(tiny_models[0]), str(tiny_models[1])), "tiny",
                              queue_size=8, timeout_s=60)
        self.seen = []
        observe = self.app.state.metrics.observe

        def record(st):
            self.seen.append((st.n_drafted, st.n_accepted, st.n_generated))
            observe(st)

        self.app.state.metrics.observe = record
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            assert time.monotonic() - t0 < 30, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(tiny_models):
    srv = Live(tiny_models)
    yield srv
    srv.close()


def test_draftwise_serve_read_back_exactly(live, prompts, tmp_path):
    live.seen.clear()
    opts = EndpointOptions((live.url,), concurrency="1,3", requests=4, max_tokens=12)
    runs = run_endpoint_bench(opts, prompts, str(tmp_path))
    info, levels = runs[0].info, runs[0].levels
    assert (info.engine, info.engine_from, info.model) == ("draftwise", "/v1/models", "tiny")
    assert [lv.concurrency for lv in levels] == [1, 3] and all(lv.n_ok == 4 for lv in levels)
    # each request's acceptance, as the client read it, is what the server recorded
    got = Counter((r.drafted, r.accepted, r.n_tokens) for r in runs[0].records)
    assert got == Counter(live.seen) and sum(d for d, _, _ in live.seen) > 0
    for lv in levels:
        recs = [r for r in runs[0].records if r.concurrency == lv.concurrency]
        assert lv.acceptance_from == "responses"
        assert lv.acceptance == pytest.approx(sum(r.accepted for r in recs)
                                              / sum(r.drafted for r in recs))
        assert lv.tokens == sum(r.n_tokens for r in recs) and lv.total_tok_s > 0
        assert lv.ttft_p50 > 0 and lv.stream_tok_s > 0
    data = json.loads((tmp_path / "endpoints.json").read_text())
    assert data["kind"] == "endpoint" and len(data["requests"]) == 8
    assert [lv["n_ok"] for lv in data["levels"]] == [4, 4]
    csv_rows = (tmp_path / "endpoints.csv").read_text().splitlines()
    assert len(csv_rows) == 3 and csv_rows[0].startswith("endpoint,label,engine")
    assert "| 127.0.0.1:" in (tmp_path / "endpoints.md").read_text()
    assert "data:image/png;base64," in (tmp_path / "endpoints.html").read_text()
    assert (tmp_path / "plots" / "endpoints_load.png").stat().st_size > 1000


def test_bench_endpoint_command(live, prompts, tmp_path):
    r = subprocess.run([*EXE, "bench", "--endpoint", live.url, "--endpoint", live.url + "/v1",
                        "--concurrency", "2", "--requests", "2", "--max-tokens", "8",
                        "--prompts", prompts.prompt_file, "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    levels = json.loads((tmp_path / "endpoints.json").read_text())["levels"]
    netloc = live.url.removeprefix("http://")
    assert [(lv["label"], lv["n_ok"]) for lv in levels] == [(netloc, 2), (f"{netloc} #2", 2)]
    assert "draftwise bench --endpoint" in r.stdout and "endpoints.html" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--target", "x", "--endpoint", "http://127.0.0.1:1"], "not both"),
    ([], "give --target MODEL"),
    (["--endpoint", "http://127.0.0.1:1", "--engine", "tgi"], "--engine must be one of"),
    (["--endpoint", "http://127.0.0.1:{port}"], "cannot reach"),
    (["--endpoint", "http://127.0.0.1:1", "--temperature", "0", "--temperature", "1"],
     "one --temperature"),
])
def test_bench_endpoint_bad_input_is_one_line(args, message, tmp_path):
    port = free_port()
    r = subprocess.run([*EXE, "bench", *(a.format(port=port) for a in args), "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "endpoints.json").exists()


# ------------------------------------------------------------------ stand-in servers


class Fake:
    """A threaded HTTP server answering like an engine; `handle(method, path, n_posts)` returns
    (status, content type, body str or list of SSE objects) or None to drop the server."""

    def __init__(self, handle):
        fake = self
        self.posts = 0

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, method):
                if method == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    fake.posts += 1
                out = handle(method, self.path, fake.posts)
                if out is None:  # the server dies: close everything
                    threading.Thread(target=fake.stop, daemon=True).start()
                    self.close_connection = True
                    return
                status, ctype, body = out
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.end_headers()
                if isinstance(body, list):
                    for obj in body:
                        self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                else:
                    self.wfile.write(body.encode())

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def fake(handle):
    srv = Fake(handle)
    try:
        yield srv
    finally:
        srv.stop()


def models(owned_by):
    return 200, "application/json", json.dumps({"object": "list", "data": [
        {"id": "m", "object": "model", "owned_by": owned_by}]})


def text_chunks(*texts):
    return [{"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in texts]


def scaled(metrics: str, names: tuple[str, ...], n: int) -> str:
    """The recorded /metrics text with the given counters multiplied by n requests served."""
    for name in names:
        metrics = re.sub(rf"^({re.escape(name)}(?:{{[^}}]*}})?) ([0-9.e+]+)$",
                         lambda m: f"{m[1]} {float(m[2]) * n}", metrics, flags=re.M)
    return metrics


LLAMA_COUNTERS = ("llamacpp:spec_decode_num_draft_tokens_total",
                  "llamacpp:spec_decode_num_accepted_tokens_total",
                  "llamacpp:spec_decode_num_drafts_total")
VLLM_COUNTERS = ("vllm:spec_decode_num_draft_tokens_total",
                 "vllm:spec_decode_num_accepted_tokens_total", "vllm:spec_decode_num_drafts_total")


def test_llama_server_stand_in(prompts, tmp_path):
    def handle(method, path, n):
        if path == "/v1/models":
            return models("llamacpp")
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", scaled(LLAMA_METRICS, LLAMA_COUNTERS, n)
        return 200, "text/event-stream", [*text_chunks("Hel", "lo", " there"), LLAMA_LAST]

    with fake(handle) as srv:
        runs = run_endpoint_bench(EndpointOptions((srv.url,), concurrency="1,2", requests=3),
                                  prompts, str(tmp_path))
    assert runs[0].info.engine == "llama-server"
    for lv in runs[0].levels:
        assert (lv.acceptance_from, lv.drafted, lv.accepted) == ("responses", 3 * 36, 3 * 23)
        assert lv.tokens == 3 * 35  # usage.completion_tokens, not the 3 chunks
        # /metrics around the level saw the same requests
        assert (lv.server.source, lv.server.drafted, lv.server.accepted) == ("counters", 108, 69)
    assert [r.n_chunks for r in runs[0].records] == [3] * 6


def test_vllm_stand_in_counters_and_sglang_gauge(prompts, tmp_path):
    def vllm_handle(method, path, n):
        if path == "/v1/models":
            return models("vllm")
        if path == "/metrics":
            return 200, "text/plain", scaled(VLLM_METRICS, VLLM_COUNTERS, n)
        return 200, "text/event-stream", text_chunks("a", "b")

    def sglang_handle(method, path, n):
        if path == "/v1/models":
            return models("sglang")
        if path == "/metrics":
            return 200, "text/plain", SGLANG_METRICS
        return 200, "text/event-stream", text_chunks("a", "b")

    with fake(vllm_handle) as v, fake(sglang_handle) as s:
        runs = run_endpoint_bench(EndpointOptions((v.url, s.url), concurrency="2", requests=2),
                                  prompts, str(tmp_path))
    vl, sg = runs[0].levels[0], runs[1].levels[0]
    assert (runs[0].info.engine, runs[1].info.engine) == ("vllm", "sglang")
    assert (vl.acceptance_from, vl.drafted, vl.accepted) == ("/metrics counters", 258, 20)
    assert vl.accept_length == pytest.approx(1 + 20 / 86)
    assert (sg.acceptance_from, sg.acceptance, sg.accept_length) == (
        "/metrics gauge (last batch)", 0.7, 3.1)
    assert len(json.loads((tmp_path / "endpoints.json").read_text())["endpoints"]) == 2


@pytest.mark.parametrize("owned_by, metrics, last, engine, expected", [
    ("someone", VLLM_METRICS, None, "auto", ("vllm", "/metrics")),
    ("someone", None, LLAMA_LAST, "auto", ("llama-server", "responses")),
    ("someone", None, None, "auto", ("unknown", "nothing")),
    ("vllm", SGLANG_METRICS, None, "sglang", ("sglang", "--engine")),
])
def test_engine_detection(prompts, tmp_path, owned_by, metrics, last, engine, expected):
    def handle(method, path, n):
        if path == "/v1/models":
            return models(owned_by)
        if path == "/metrics":
            return (200, "text/plain", metrics) if metrics else (404, "text/html", "<html/>")
        return 200, "text/event-stream", text_chunks("a") + ([last] if last else [])

    with fake(handle) as srv:
        runs = run_endpoint_bench(EndpointOptions((srv.url,), concurrency="1", requests=1,
                                                  engine=engine), prompts, str(tmp_path))
    info = runs[0].info
    assert (info.engine, info.engine_from) == expected
    assert runs[0].levels[0].engine == expected[0]


def test_levels_are_bounded_in_time(prompts, tmp_path):
    """No request starts after --time-limit: far fewer than --requests are sent."""
    def handle(method, path, n):
        if path == "/v1/models":
            return models("vllm")
        if path == "/metrics":
            return 404, "text/plain", ""
        time.sleep(0.05)
        return 200, "text/event-stream", text_chunks("a")

    with fake(handle) as srv:
        runs = run_endpoint_bench(EndpointOptions((srv.url,), concurrency="2", requests=10_000,
                                                  time_limit=1.0), prompts, str(tmp_path))
    lv = runs[0].levels[0]
    assert 2 <= lv.n_sent < 10_000 and lv.n_errors == 0


def test_not_an_openai_server(prompts, tmp_path):
    page = "<!DOCTYPE html><html><body>Welcome</body></html>"
    with fake(lambda method, path, n: (200, "text/html", page)) as srv:
        with pytest.raises(DraftwiseError, match="not an OpenAI-compatible server") as e:
            run_endpoint_bench(EndpointOptions((srv.url,)), prompts, str(tmp_path))
    assert "\n" not in str(e.value) and "text/html" in str(e.value)
    assert not (tmp_path / "endpoints.json").exists()


def test_unreachable_endpoint(prompts, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DraftwiseError, match="cannot reach") as e:
        run_endpoint_bench(EndpointOptions((url,)), prompts, str(tmp_path))
    assert "\n" not in str(e.value) and url in str(e.value)


def test_endpoint_that_errors_halfway_keeps_what_it_measured(prompts, tmp_path):
    oom = json.dumps({"error": {"message": "CUDA out of memory", "type": "server_error"}})

    def handle(method, path, n):
        if path == "/v1/models":
            return models("vllm")
        if path == "/metrics":
            return 404, "text/plain", "not found"
        return (200, "text/event-stream", text_chunks("ok")) if n <= 3 else \
            (500, "application/json", oom)

    with fake(handle) as srv:
        with pytest.raises(DraftwiseError) as e:
            run_endpoint_bench(EndpointOptions((srv.url,), concurrency="1,2", requests=3),
                               prompts, str(tmp_path))
    msg = str(e.value)
    assert "every request at concurrency 2 failed (HTTP 500: CUDA out of memory)" in msg
    assert "partial results in" in msg and "\n" not in msg
    data = json.loads((tmp_path / "endpoints.json").read_text())
    assert [(lv["concurrency"], lv["n_ok"], lv["n_errors"]) for lv in data["levels"]] == [
        (1, 3, 0), (2, 0, 3)]
    assert data["failures"] == [msg.split("; partial results")[0]]
    assert "Stopped early" in (tmp_path / "endpoints.md").read_text()


def test_endpoint_that_dies_halfway(prompts, tmp_path):
    def handle(method, path, n):
        if path == "/v1/models":
            return models("llamacpp")
        if path == "/metrics":
            return 501, "application/json", "{}"
        return (200, "text/event-stream", text_chunks("x", "y")) if n <= 2 else None

    with fake(handle) as srv:
        with pytest.raises(DraftwiseError, match="stopped answering at concurrency 1 after 2 "
                           "requests") as e:
            run_endpoint_bench(EndpointOptions((srv.url,), concurrency="1,4", requests=5),
                               prompts, str(tmp_path))
    assert "\n" not in str(e.value)
    levels = json.loads((tmp_path / "endpoints.json").read_text())["levels"]
    assert [(lv["n_ok"], lv["n_errors"]) for lv in levels] == [(2, 1)]
