"""The OpenAI-compatible server, live on 127.0.0.1, driven by the official openai client and httpx."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from contextlib import contextmanager

import httpx
import openai
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from draftwise.acceptance import parse_accept
from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.loader import BackendOptions, build_engine
from draftwise.policy import FixedK
from draftwise.server import create_app

NAME = "tiny"
PROMPTS = ["def quicksort(a):", "The quick brown fox", "for i in range(10):",
           "Speculative decoding drafts"]
MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Sort a list in Python."}]


class Throttle:
    """Wraps a backend's forward (one call per batched decode): counts calls, can block them on a
    gate or slow them down."""

    def __init__(self, backend):
        self.delay, self.calls, self.gate = 0.0, 0, threading.Event()
        self.gate.set()
        inner = backend._forward_many

        def forward(feeds):
            self.calls += 1
            self.gate.wait(30)
            if self.delay:
                time.sleep(self.delay)
            return inner(feeds)

        backend._forward_many = forward

    def reset(self) -> None:
        self.delay = 0.0
        self.gate.set()


class Live:
    """A uvicorn server on an ephemeral loopback port, in a background thread."""

    def __init__(self, engine, **kw):
        self.engine, self.app = engine, create_app(engine, NAME, **kw)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0,
                                                    log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            assert time.monotonic() - t0 < 20, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0)

    def aclient(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0)

    def metrics(self) -> dict[tuple, float]:
        """{(sample name, sorted labels): value} from GET /metrics, via prometheus' parser."""
        text = self.http.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)


@contextmanager
def live(engine, **kw):
    srv = Live(engine, **kw)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def ref(tiny_models):
    """A second engine on the same models: what `draftwise generate` produces in-process."""
    return build_engine(str(tiny_models[0]), str(tiny_models[1]))


@pytest.fixture(scope="module")
def srv(tiny_models):
    engine = build_engine(str(tiny_models[0]), str(tiny_models[1]))
    engine.throttle = Throttle(engine.target)
    with live(engine, queue_size=8, timeout_s=60) as s:
        yield s


@pytest.fixture
def throttle(srv):
    yield srv.engine.throttle
    srv.engine.throttle.reset()


def expected(ref, prompt, max_tokens=24, **sampling) -> object:
    return ref.generate(prompt, GenerateConfig(max_tokens=max_tokens,
                                               sampling=SamplingConfig(**sampling)))


def chat_prompt(ref, messages=MESSAGES) -> str:
    return ref.target.apply_chat_template(messages)


def wait_for(cond, timeout=10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "condition not reached in time"
        time.sleep(0.02)


# --- the openai client ----------------------------------------------------------------------------

def test_models_and_health(srv):
    assert [m.id for m in srv.client.models.list().data] == [NAME]
    assert srv.client.models.retrieve(NAME).id == NAME
    h = srv.http.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_completion_greedy_matches_engine(srv, ref, prompt):
    want = expected(ref, prompt)
    r = srv.client.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0)
    assert r.choices[0].text == want.text
    assert r.choices[0].finish_reason == want.stats.finish_reason
    assert r.usage.completion_tokens == len(want.tokens) == want.stats.n_generated
    assert r.usage.prompt_tokens == want.stats.n_prompt
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # How much was drafted depends on the K policy (adaptive K follows measured times), so the
    # speculative block is checked against itself, not against another engine's counts.
    spec = r.model_extra["speculative"]
    assert 0 < spec["accepted"] <= spec["drafted"] and spec["k_used"] > 0
    assert spec["acceptance_rate"] == pytest.approx(spec["accepted"] / spec["drafted"], abs=1e-3)
    assert 1 <= spec["tokens_per_round"] <= r.usage.completion_tokens

    chunks = list(srv.client.completions.create(model=NAME, prompt=prompt, max_tokens=24,
                                                temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == want.text
    assert [c.choices[0].finish_reason for c in chunks][-1] == want.stats.finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_greedy_matches_engine(srv, ref):
    want = expected(ref, chat_prompt(ref), max_tokens=32)
    r = srv.client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=32,
                                           temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text
    assert r.choices[0].finish_reason == want.stats.finish_reason
    assert r.usage.completion_tokens == want.stats.n_generated

    chunks = list(srv.client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=32,
                                                     temperature=0, stream=True,
                                                     stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == want.stats.n_generated
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == want.text
    assert chunks[-2].choices[0].finish_reason == want.stats.finish_reason


def test_sse_wire_format(srv):
    body = {"messages": MESSAGES, "max_tokens": 8, "temperature": 0, "stream": True}
    with srv.http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"]
               for c in chunks)
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "speculative" in chunks[-1]


def test_stop_seed_and_draft_k(srv, ref):
    full = expected(ref, PROMPTS[2], max_tokens=24).text
    stop = full[5:8]
    r = srv.client.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=24, temperature=0,
                                      stop=[stop, "\x00never"])
    assert r.choices[0].text == full[:full.index(stop)] and r.choices[0].finish_reason == "stop"

    # Sampling with a seed is reproducible and equals the engine's own sampled output.
    want = expected(ref, PROMPTS[3], temperature=0.9, top_p=0.95, seed=7).text
    for _ in range(2):
        r = srv.client.completions.create(model=NAME, prompt=PROMPTS[3], max_tokens=24,
                                          temperature=0.9, top_p=0.95, seed=7)
        assert r.choices[0].text == want

    # draft_k forces K for one request only (and greedy output does not depend on K).
    policy = srv.engine.policy
    r = srv.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=24, temperature=0,
                                      extra_body={"draft_k": 1})
    assert r.choices[0].text == expected(ref, PROMPTS[0]).text
    assert r.model_extra["speculative"]["k_used"] <= 1
    assert srv.engine.policy is policy


def test_token_id_prompt(srv, ref):
    ids = ref.prompt_ids(PROMPTS[1])
    r = srv.client.completions.create(model=NAME, prompt=ids, max_tokens=12, temperature=0)
    assert r.choices[0].text == expected(ref, PROMPTS[1], max_tokens=12).text


# --- load, queue, disconnects, timeouts -----------------------------------------------------------

async def _complete(client, prompt, retry_s=0.0):
    """(status, text): 200 with the text, or 429 (after polite retries for up to retry_s seconds)."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            r = await client.completions.create(model=NAME, prompt=prompt, max_tokens=16,
                                                temperature=0, stream=True)
            return 200, "".join([c.choices[0].text async for c in r])
        except openai.RateLimitError as e:
            assert int(e.response.headers["retry-after"]) >= 1
            assert e.body["code"] == "queue_full"
            if time.monotonic() > deadline:
                return 429, None
            await asyncio.sleep(0.05)


def test_32_clients_full_queue_gets_429_others_complete(srv, ref, throttle):
    refs = {p: expected(ref, p, max_tokens=16).text for p in PROMPTS}

    async def flood():
        client = srv.aclient()
        throttle.gate.clear()  # hold the engine so the queue fills deterministically
        first = asyncio.create_task(_complete(client, PROMPTS[0]))
        await asyncio.to_thread(wait_for, lambda: srv.http.get("/health").json()["running"])
        rest = [asyncio.create_task(_complete(client, PROMPTS[i % 4])) for i in range(1, 32)]
        t0 = time.monotonic()
        while sum(t.done() for t in rest) < 31 - 8:  # all but 8 queued are refused at once
            assert time.monotonic() - t0 < 20
            await asyncio.sleep(0.02)
        assert srv.http.get("/health").json()["queue_depth"] == 8
        throttle.gate.set()
        out = await asyncio.wait_for(asyncio.gather(first, *rest), 60)
        await client.close()
        return out

    results = asyncio.run(flood())
    ok = [(i, text) for i, (status, text) in enumerate(results) if status == 200]
    assert len(ok) == 9 and sum(status == 429 for status, _ in results) == 23
    for i, text in ok:
        assert text == refs[PROMPTS[i % 4]]


def test_32_clients_unthrottled_with_retries(srv, ref):
    refs = {p: expected(ref, p, max_tokens=16).text for p in PROMPTS}

    async def flood():
        client = srv.aclient()
        out = await asyncio.wait_for(asyncio.gather(
            *[_complete(client, PROMPTS[i % 4], retry_s=90) for i in range(32)]), 120)
        await client.close()
        return out

    for i, (status, text) in enumerate(asyncio.run(flood())):
        assert status == 200 and text == refs[PROMPTS[i % 4]]
    assert srv.http.get("/health").json() == {"status": "ok", "model": NAME, "queue_depth": 0,
                                              "running": False}


def test_disconnect_mid_stream_frees_the_slot(srv, ref, throttle):
    before = srv.metrics()
    throttle.delay = 0.05  # ~100 rounds of 50 ms: the first request alone would take seconds
    body = {"prompt": PROMPTS[1], "max_tokens": 200, "temperature": 0, "stream": True}
    with srv.http.stream("POST", "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        got = [ln for ln, _ in zip(lines, range(6)) if ln.startswith("data: {")]
        assert got  # mid-stream
    t0 = time.monotonic()
    r = srv.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=4, temperature=0)
    assert time.monotonic() - t0 < 2.0
    assert r.choices[0].text == expected(ref, PROMPTS[0], max_tokens=4).text
    calls = throttle.calls
    time.sleep(0.3)
    assert throttle.calls == calls  # nothing is still generating for the gone client
    after = srv.metrics()
    key = ("draftwise_requests_total", (("endpoint", "/v1/completions"), ("status", "499")))
    assert after[key] == before.get(key, 0) + 1


def test_disconnect_while_queued_frees_the_slot(srv, throttle):
    throttle.gate.clear()
    holder = threading.Thread(target=lambda: srv.client.completions.create(
        model=NAME, prompt=PROMPTS[0], max_tokens=4))
    holder.start()
    wait_for(lambda: srv.http.get("/health").json()["running"])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/v1/completions", json={"prompt": "x", "max_tokens": 4}, timeout=0.5)
    wait_for(lambda: srv.http.get("/health").json()["queue_depth"] == 0, timeout=3)
    throttle.gate.set()
    holder.join(10)


def test_timeout(tiny_models, ref):
    engine = build_engine(str(tiny_models[0]), str(tiny_models[1]))
    throttle = Throttle(engine.target)
    throttle.delay = 0.3  # prefill + one round alone exceed the timeout, even if EOS came next
    with live(engine, timeout_s=0.5) as s:
        with pytest.raises(openai.APIStatusError) as e:
            s.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=200,
                                        temperature=0)
        assert e.value.status_code == 504 and e.value.body["code"] == "timeout"
        with pytest.raises(openai.APIError, match="timed out"):
            list(s.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=200,
                                             temperature=0, stream=True))
        throttle.delay = 0.0
        r = s.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=8, temperature=0)
        assert r.choices[0].text == expected(ref, PROMPTS[0], max_tokens=8).text


# --- bad input ------------------------------------------------------------------------------------

C, CHAT = "/v1/completions", "/v1/chat/completions"
BAD = [
    (C, b'{"prompt": "a", ', 400, None),
    (C, b"[1, 2]", 400, None),
    (C, b"", 400, None),
    (C, b'{"prompt": 3}', 400, "prompt"),
    (C, b'{"prompt": ["a", "b"]}', 400, "prompt"),
    (C, b'{"prompt": "a", "temperature": "hot"}', 400, "temperature"),
    (C, b'{"prompt": "a", "max_tokens": "8"}', 400, "max_tokens"),
    (C, b'{"prompt": "a", "stream": "yes"}', 400, "stream"),
    (C, b'{"prompt": "a", "stop": 5}', 400, "stop"),
    (C, b'{"prompt": "a", "model": "gpt-4"}', 404, "model"),
    (C, b'{"prompt": "a", "max_tokens": 100000}', 400, "max_tokens"),
    (C, b'{"prompt": "a", "max_tokens": 0}', 400, "max_tokens"),
    (C, json.dumps({"prompt": "fox " * 80, "max_tokens": 250}).encode(), 400, "max_tokens"),
    (C, json.dumps({"prompt": "The quick brown fox " * 300}).encode(), 400, "prompt"),
    (C, b'{"prompt": ""}', 400, "prompt"),
    (C, b'{"prompt": [1, 999999]}', 400, "prompt"),
    (C, b'{"prompt": "a", "temperature": -0.1}', 400, "temperature"),
    (C, b'{"prompt": "a", "top_p": 0}', 400, "top_p"),
    (C, b'{"prompt": "a", "top_p": 1.5}', 400, "top_p"),
    (C, b'{"prompt": "a", "n": 2}', 400, "n"),
    (C, b'{"prompt": "a", "draft_k": 0}', 400, "draft_k"),
    (C, b'{"prompt": "a", "draft_k": 33}', 400, "draft_k"),
    (C, b'{"prompt": "a", "accept": "loose"}', 400, "accept"),
    (C, b'{"prompt": "a", "accept": "topk:1"}', 400, "accept"),
    (C, b'{"prompt": "a", "accept": 3}', 400, "accept"),
    (C, b'{"prompt": "a", "accept": "topk:3"}', 400, "accept"),  # temperature 1 (OpenAI's default)
    (C, b'{"prompt": "a", "accept": "typical:0.1", "temperature": 0}', 400, "accept"),
    (C, b'{"prompt": "a", "logprobs": 2}', 400, "logprobs"),
    (C, b'{"prompt": "a", "seed": 1.5}', 400, "seed"),
    (C, json.dumps({"prompt": "a", "stop": ["x" * 300]}).encode(), 400, "stop"),
    (C, b'{"prompt": "a", "temperature": Infinity}', 400, "temperature"),
    (C, b'{"prompt": "\\ud800"}', 400, "prompt"),
    (CHAT, b'{"messages": []}', 400, "messages"),
    (CHAT, b'{"messages": "hi"}', 400, "messages"),
    (CHAT, b'{"messages": [{"role": "robot", "content": "hi"}]}', 400, "messages.0.role"),
    (CHAT, b'{"messages": [{"role": "user", "content": 7}]}', 400, "messages.0.content"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 256}', 400,
     "max_tokens"),
    (CHAT, json.dumps({"messages": [{"role": "user", "content": "fox " * 400}]}).encode(), 400,
     "messages"),
    (C, json.dumps({"prompt": "a" * (3 << 20)}).encode(), 413, None),
    ("/v1/nothing", b"{}", 404, None),
]


@pytest.mark.parametrize("path,body,status,param", BAD)
def test_bad_input_gets_4xx_in_openai_format(srv, path, body, status, param):
    r = srv.http.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    assert srv.http.get("/health").status_code == 200


def test_bad_input_streaming_and_client_errors(srv, ref):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        srv.client.completions.create(model=NAME, prompt="a", temperature=-1, stream=True)
    with pytest.raises(openai.NotFoundError):
        srv.client.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="context"):
        srv.client.completions.create(model=NAME, prompt="fox " * 300, stream=True)
    r = srv.http.get("/v1/completions")
    assert r.status_code == 405 and r.json()["error"]["message"]
    # Still serving, with the same output as before.
    r = srv.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=8, temperature=0)
    assert r.choices[0].text == expected(ref, PROMPTS[0], max_tokens=8).text


# --- lenient (lossy) acceptance -------------------------------------------------------------------

def test_accept_per_request(srv, ref):
    """A request's `accept` verifies it leniently, as the engine would with that mode; the
    speculative object says so. Bad modes are one line naming the valid forms."""
    rule = parse_accept("topk:3")
    want = ref.generate(PROMPTS[1], GenerateConfig(max_tokens=30), policy=FixedK(4), accept=rule)
    r = srv.client.completions.create(model=NAME, prompt=PROMPTS[1], max_tokens=30, temperature=0,
                                      extra_body={"accept": "topk:3", "draft_k": 4})
    spec = r.model_extra["speculative"]
    assert r.choices[0].text == want.text and not want.exact
    assert (spec["accept"], spec["exact"], spec["n_lenient"]) == ("topk:3", False,
                                                                  want.stats.n_lenient)
    assert want.stats.n_lenient > 0
    r = srv.client.completions.create(model=NAME, prompt=PROMPTS[1], max_tokens=30, temperature=0)
    spec = r.model_extra["speculative"]
    assert (spec["accept"], spec["exact"], spec["n_lenient"]) == ("exact", True, 0)
    err = srv.http.post("/v1/completions", json={"prompt": "a", "accept": "loose"}).json()["error"]
    assert "\n" not in err["message"] and "'loose' is not an acceptance mode" in err["message"]
    assert "topk:N" in err["message"] and "typical:EPS[,DELTA]" in err["message"]


def test_server_default_accept_applies_where_defined(tiny_models):
    """serve --accept topk:3: greedy requests are lenient by default, sampled ones (topk is not
    defined there) exact; a request's own mode still wins."""
    engine = build_engine(str(tiny_models[0]), str(tiny_models[1]),
                          spec=SpecConfig(k=4, accept="topk:3"))
    with live(engine) as s:
        def spec_of(**kw):
            r = s.client.completions.create(model=NAME, prompt=PROMPTS[1], max_tokens=20, **kw)
            return r.model_extra["speculative"]

        assert (spec_of(temperature=0)["accept"], spec_of(temperature=0)["exact"]) == (
            "topk:3", False)
        assert spec_of(temperature=0.8, seed=1)["accept"] == "exact"
        assert spec_of(temperature=0.8, seed=1, extra_body={"accept": "ratio:0.5"})[
            "accept"] == "ratio:0.5"
        assert spec_of(temperature=0, extra_body={"accept": "exact"})["exact"] is True


# --- metrics and the acceptance alarm -------------------------------------------------------------

def test_metrics_parse_and_move(srv):
    before = srv.metrics()
    r = srv.client.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=16, temperature=0)
    srv.http.post("/v1/completions", json={"prompt": "a", "temperature": -1})
    after = srv.metrics()

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("draftwise_requests_total", endpoint="/v1/completions", status="200") == 1
    assert moved("draftwise_requests_total", endpoint="/v1/completions", status="400") == 1
    assert moved("draftwise_generated_tokens_total") == r.usage.completion_tokens
    assert moved("draftwise_prompt_tokens_total") == r.usage.prompt_tokens
    for h in ("draftwise_acceptance_rate", "draftwise_tokens_per_round",
              "draftwise_time_per_token_seconds", "draftwise_time_to_first_token_seconds"):
        assert moved(h + "_count") == 1
    assert ("draftwise_queue_depth", ()) in after
    assert moved("draftwise_batch_size_count") > 0
    drafted = moved("draftwise_spec_decode_num_draft_tokens_total")
    assert moved("draftwise_spec_decode_num_drafts_total") > 0 and drafted > 0
    assert 0 < moved("draftwise_spec_decode_num_accepted_tokens_total") <= drafted
    assert ("draftwise_low_acceptance_alarms_total", ()) in after


def test_low_acceptance_alarm(tiny_models, tmp_path, caplog):
    from tiny import build_model
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models[0])
    stranger = build_model(tmp_path / "stranger", seed=3, tok=tok)  # unrelated to the target
    engine = build_engine(str(tiny_models[0]), str(stranger), spec=SpecConfig(k=4))
    with live(engine) as s, caplog.at_level(logging.WARNING, logger="draftwise.server"):
        r = s.client.completions.create(model=NAME, prompt=PROMPTS[1], max_tokens=200,
                                        temperature=0)
        assert r.model_extra["speculative"]["acceptance_rate"] < 0.5
        assert s.metrics()[("draftwise_low_acceptance_alarms_total", ())] == 1
    assert any("acceptance stayed below 0.5" in rec.getMessage() for rec in caplog.records)


# --- hermetic: state stays in the test's DRAFTWISE_HOME (conftest) --------------------------------

def test_adaptive_costs_stay_in_the_tests_home(tiny_models, draftwise_home, tmp_path, monkeypatch):
    """Adaptive K, as `serve` runs it, loads and saves its costs under DRAFTWISE_HOME only: with
    the user cache redirected to an empty directory, nothing appears there."""
    from draftwise.loader import open_engine

    user_cache = tmp_path / "user-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))  # where platformdirs would look
    with open_engine(str(tiny_models[0]), str(tiny_models[1]),
                     spec=SpecConfig(adaptive=True)) as engine, live(engine) as s:
        r = s.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=24,
                                        temperature=0)
        assert r.usage.completion_tokens == 24
    assert len(list((draftwise_home / "costs").glob("*.json"))) == 1  # saved on exit, here
    assert not user_cache.exists()


# --- the real pair --------------------------------------------------------------------------------

@pytest.mark.real
def test_real_qwen_pair_over_http():
    from draftwise.models.pull import pull

    for name in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"):
        pull(name, progress=False)
    engine = build_engine("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b",
                          BackendOptions(backend="llama.cpp", n_ctx=2048), SpecConfig(k=4))
    messages = [{"role": "user", "content": "Write a Python function that checks if a number "
                                            "is prime."}]
    want = engine.generate(engine.target.apply_chat_template(messages),
                           GenerateConfig(max_tokens=64))  # before serving: one owner at a time
    with live(engine) as s:
        r = s.client.chat.completions.create(model=NAME, messages=messages, max_tokens=64,
                                             temperature=0)
        assert r.choices[0].message.content == want.text
        assert r.model_extra["speculative"]["acceptance_rate"] > 0.5
        chunks = list(s.client.chat.completions.create(model=NAME, messages=messages,
                                                        max_tokens=64, temperature=0,
                                                        stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text
