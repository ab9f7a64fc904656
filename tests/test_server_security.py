"""Who may use the server (API keys, CORS), what it refuses (null content), how it stops (SIGTERM).

Keys, CORS and validation run on the tiny models in-process; stopping runs `draftwise serve` in a
subprocess on the real Gemma 3 270M, slow enough on a CPU that a reply is still streaming when
the signal comes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import openai
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from draftwise.config import GenerateConfig
from draftwise.errors import DraftwiseError
from draftwise.loader import build_engine
from draftwise.server import create_app
from draftwise.server.auth import exposure_warning, is_loopback, key_ok, parse_keys

NAME = "tiny"
KEYS = ["k-one", "k-two"]


@contextmanager
def live(engine, log_level="warning", **kw):
    """(url, app): a uvicorn server on an ephemeral loopback port, in a background thread."""
    app = create_app(engine, NAME, **kw)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level=log_level,
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        assert time.monotonic() - t0 < 20, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def engine(tiny_models):
    return build_engine(str(tiny_models[0]), str(tiny_models[1]))


@pytest.fixture(scope="module")
def keyed(engine):
    with live(engine, api_keys=KEYS, cors_origins=["http://app.example"]) as (url, _):
        yield url


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def requests_total(url: str, key: str) -> dict[tuple, float]:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
    return {tuple(sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == "draftwise_requests_total"}


# --- API keys -------------------------------------------------------------------------------------

def test_no_key_is_401_except_health(keyed):
    before = requests_total(keyed, KEYS[0])
    for method, path in (("GET", "/v1/models"), ("GET", f"/v1/models/{NAME}"), ("GET", "/metrics"),
                         ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                         ("GET", "/nothing")):
        r = httpx.request(method, keyed + path, json={"prompt": "a"})
        assert r.status_code == 401, (path, r.text)
        assert r.json() == {"error": {"message": "no API key: send it as `Authorization: Bearer "
                                                 "KEY`", "type": "invalid_request_error",
                                      "param": None, "code": "missing_api_key"}}
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(keyed + "/health").status_code == 200
    after = requests_total(keyed, KEYS[0])
    key = (("endpoint", "/v1/completions"), ("status", "401"))
    assert after[key] == before.get(key, 0) + 1


@pytest.mark.parametrize("header", ["Bearer k-on", "Bearer k-one2", "Basic k-one", "k-one",
                                    "Bearer", "Bearer k-one k-two"])
def test_malformed_or_wrong_authorization(keyed, header):
    r = httpx.get(keyed + "/v1/models", headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert "k-one" not in r.text and "k-two" not in r.text


def test_openai_client_wrong_and_right_keys(keyed, engine):
    with pytest.raises(openai.AuthenticationError) as e:
        client(keyed, "sk-wrong").models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    assert "sk-wrong" not in e.value.response.text
    with pytest.raises(openai.AuthenticationError):
        client(keyed, "sk-wrong").completions.create(model=NAME, prompt="def f(", max_tokens=4,
                                                      stream=True)
    want = engine.generate("def quicksort(a):", GenerateConfig(max_tokens=8)).text
    for key in KEYS:  # every key opens the door
        c = client(keyed, key)
        assert [m.id for m in c.models.list().data] == [NAME]
        r = c.completions.create(model=NAME, prompt="def quicksort(a):", max_tokens=8,
                                 temperature=0)
        assert r.choices[0].text == want
        chunks = c.completions.create(model=NAME, prompt="def quicksort(a):", max_tokens=8,
                                      temperature=0, stream=True)
        assert "".join(ch.choices[0].text for ch in chunks) == want


def test_key_is_never_logged(engine, capfd):
    with live(engine, log_level="debug", api_keys=["sk-secret-1"]) as (url, _):
        capfd.readouterr()
        client(url, "sk-secret-1").models.list()
        with pytest.raises(openai.AuthenticationError):
            client(url, "sk-guess-2").models.list()
    out, err = capfd.readouterr()
    assert '"GET /v1/models HTTP/1.1" 401' in out + err  # the access log ran
    assert "sk-secret-1" not in out + err and "sk-guess-2" not in out + err


def test_key_helpers():
    assert parse_keys(["a", " b "], "c, d,,a") == ["a", "b", "c", "d"]
    assert parse_keys([], None) == [] and parse_keys([], "") == []
    with pytest.raises(DraftwiseError, match="--api-key must not be empty"):
        parse_keys(["a", " "], None)
    assert key_ok(b"Bearer a", [b"x", b"a"]) and key_ok(b"bearer a", [b"a"])
    assert not key_ok(None, [b"a"]) and not key_ok(b"Bearer ab", [b"a"])
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host) and exposure_warning(host, 8000, []) is None
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert not is_loopback(host)
        assert f"serving on {host} without an API key" in exposure_warning(host, 8000, [])
        assert exposure_warning(host, 8000, ["k"]) is None


# --- CORS -----------------------------------------------------------------------------------------

def test_cors(keyed, engine):
    pre = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(keyed + "/v1/chat/completions", headers=pre)  # preflight: no key needed
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    r = httpx.options(keyed + "/v1/chat/completions", headers={**pre, "Origin": "http://evil.example"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = httpx.get(keyed + "/v1/models", headers={"Origin": "http://app.example",
                                                 "Authorization": f"Bearer {KEYS[0]}"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = httpx.get(keyed + "/v1/models", headers={"Origin": "http://app.example"})
    assert r.status_code == 401  # a browser can read why
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    with live(engine) as (url, _):  # without --cors-origin: no CORS headers at all
        r = httpx.get(url + "/v1/models", headers={"Origin": "http://app.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# --- null content ---------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [{"role": "user", "content": None}, {"role": "user"},
                                     {"role": "system", "content": None},
                                     {"role": "tool", "content": None}])
def test_null_content_is_400(keyed, message):
    body = {"messages": [{"role": "user", "content": "hi"}, message], "max_tokens": 4}
    r = httpx.post(keyed + "/v1/chat/completions", json=body,
                   headers={"Authorization": f"Bearer {KEYS[0]}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "messages.1.content" and err["type"] == "invalid_request_error"
    assert f"a {message['role']} message needs content" in err["message"]


def test_null_content_with_openai_client(keyed):
    c = client(keyed, KEYS[1])
    with pytest.raises(openai.BadRequestError, match="a user message needs content"):
        c.chat.completions.create(model=NAME, max_tokens=4,
                                  messages=[{"role": "user", "content": None}])
    # An assistant turn may be null (OpenAI: one that only made tool calls).
    r = c.chat.completions.create(model=NAME, max_tokens=4, messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": None},
        {"role": "user", "content": "again"}])
    assert r.choices[0].finish_reason in ("stop", "length")


# --- stopping: SIGTERM and SIGINT alike -----------------------------------------------------------

def test_draining_server_refuses_with_503(engine):
    with live(engine) as (url, app):
        httpx.get(url + "/health").raise_for_status()
        app.state.worker.drain()  # what the first signal does
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json() == {"status": "stopping", "model": NAME}
        r = httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"


PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"  # Gemma counts on and on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serving:
    """`draftwise serve` on the real Gemma 3 270M with the n-gram draft and adaptive K (whose
    costs are saved when it stops), in a subprocess with its own DRAFTWISE_HOME."""

    def __init__(self, home, *args, env=None):
        from draftwise.models.pull import pull

        gemma = str(pull("gemma-3-270m", progress=False))
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "draftwise.cli", "serve", "--target", gemma, "--draft", "ngram",
             "--port", str(self.port), "--name", "gemma", "--ctx", "2048", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "DRAFTWISE_HOME": str(home), **(env or {})})
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            assert time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)

    def health(self) -> dict:
        return httpx.get(self.url + "/health").json()

    def costs(self) -> list[str]:
        d = self.home / "costs"
        return sorted(p.name for p in d.glob("*.json")) if d.is_dir() else []

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=300)
        return self.proc.returncode, err


def stream_in_thread(url: str, headers: dict, max_tokens: int) -> tuple[threading.Thread, list]:
    """Stream a completion into a list of SSE data payloads, in a thread."""
    events: list[str] = []

    def run():
        body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, headers=headers,
                          timeout=300) as r:
            assert r.status_code == 200
            events.extend(ln.removeprefix("data: ") for ln in r.iter_lines() if ln)

    t = threading.Thread(target=run)
    t.start()
    return t, events


def queue_one(url: str, headers: dict) -> tuple[threading.Thread, list]:
    out: list[httpx.Response] = []
    t = threading.Thread(target=lambda: out.append(httpx.post(
        url + "/v1/completions", json={"prompt": "x", "max_tokens": 4}, headers=headers,
        timeout=300)))
    t.start()
    return t, out


def wait_for(cond, timeout=120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.real
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_cuts_the_stream_after_grace_answers_queued_503_saves_costs(tmp_path, sig):
    srv = Serving(tmp_path / "home", "--grace", "1", "--api-key", "key-gamma",
                  env={"DRAFTWISE_API_KEY": "key-alpha, key-beta"})
    auth = {"Authorization": "Bearer key-beta"}
    assert httpx.get(srv.url + "/v1/models").status_code == 401
    assert httpx.get(srv.url + "/v1/models",
                     headers={"Authorization": "Bearer key-gamma"}).status_code == 200
    stream, events = stream_in_thread(srv.url, auth, max_tokens=1500)  # minutes of counting
    wait_for(lambda: len(events) >= 8)  # mid-stream, with adaptive K's costs measured
    queued, answers = queue_one(srv.url, auth)
    wait_for(lambda: srv.health()["queue_depth"] == 1)
    code, err = srv.stop(sig)
    stream.join(30)
    queued.join(30)
    assert code == 0, err
    assert answers[0].status_code == 503
    assert answers[0].json()["error"]["code"] == "shutting_down"
    assert events[-1] == "[DONE]"
    cut = json.loads(events[-2])["error"]
    assert cut["code"] == "shutting_down" and "before the reply was complete" in cut["message"]
    assert all("choices" in json.loads(e) for e in events[:-2])
    assert len(srv.costs()) == 1
    assert "Traceback" not in err and "key-" not in err


@pytest.mark.real
def test_sigterm_lets_the_running_reply_finish_within_grace(tmp_path):
    srv = Serving(tmp_path / "home", "--grace", "240")
    stream, events = stream_in_thread(srv.url, {}, max_tokens=120)  # seconds, even on a fast CPU
    wait_for(lambda: len(events) >= 2)
    queued, answers = queue_one(srv.url, {})
    wait_for(lambda: srv.health()["queue_depth"] == 1)
    code, err = srv.stop(signal.SIGTERM)
    stream.join(30)
    queued.join(30)
    assert code == 0, err
    assert answers[0].status_code == 503
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "length"  # all 120 tokens
    assert len(srv.costs()) == 1
