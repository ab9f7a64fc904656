"""`serve --parallel N` on tiny GGUF models (llama.cpp): concurrent requests share batched rounds
and still get what each gets alone; cancellation, the queue, 429 and timeouts per request."""

from __future__ import annotations

import asyncio
import threading

import httpx
import openai
import pytest
from test_batch import TIE, ggufs  # noqa: F401 - a fixture
from test_server import Throttle, live, wait_for

from draftwise.config import GenerateConfig
from draftwise.errors import DraftwiseError
from draftwise.loader import BackendOptions, build_engine

NAME = "tiny"
PROMPTS = ["the quick fox return tokens", "def range print", "draft target verifies the dog",
           "if else for lazy pivot sleeps return the quick"]
N_NEW = 24


def batched(ggufs, n_seq: int):
    eng = build_engine(ggufs[0], ggufs[1], BackendOptions(threads=1, n_ctx=256, n_seq=n_seq))
    eng.throttle = Throttle(eng.target)
    return eng


@pytest.fixture(scope="module")
def alone(ggufs) -> dict[str, tuple[str, str]]:
    """prompt -> (the text generated alone, its part before the first near-tie)."""
    eng = build_engine(ggufs[0], ggufs[1], BackendOptions(threads=1, n_ctx=256))
    out = {}
    for p in PROMPTS:
        g = eng.generate(p, GenerateConfig(max_tokens=N_NEW), trace_margins=True)
        tie = next((i for i, m in enumerate(g.margins) if m < TIE), len(g.tokens))
        out[p] = g.text, eng.target.detokenize(g.tokens[:tie])
    return out


def matches(text: str, ref: tuple[str, str]) -> bool:
    """The text decoded alone, or the same up to a near-tie."""
    return text == ref[0] or text.startswith(ref[1])


@pytest.fixture(scope="module")
def srv(ggufs):
    with live(batched(ggufs, 4), queue_size=8, timeout_s=60, parallel=4) as s:
        yield s


def test_concurrent_streams_equal_alone(srv, alone):
    """Eight streaming clients at once on four sequences: each text is the one decoded alone; the
    rounds were batched (mean batch size > 1) and speculative counters moved."""
    before = srv.metrics()

    async def one(client, p):
        stream = await client.completions.create(model=NAME, prompt=p, max_tokens=N_NEW,
                                                 temperature=0, stream=True)
        return "".join([c.choices[0].text async for c in stream if c.choices])

    async def all_at_once():
        client = srv.aclient()
        return await asyncio.gather(*(one(client, p) for p in PROMPTS * 2))

    texts = asyncio.run(all_at_once())
    for p, text in zip(PROMPTS * 2, texts):
        assert matches(text, alone[p]), (p, text, alone[p])
    assert sum(t == alone[p][0] for p, t in zip(PROMPTS * 2, texts)) >= 6  # mostly exact
    after = srv.metrics()

    def moved(name):
        return after.get((name, ()), 0) - before.get((name, ()), 0)

    assert moved("draftwise_batch_size_sum") / moved("draftwise_batch_size_count") > 1.5
    assert moved("draftwise_spec_decode_num_accepted_tokens_total") > 0


def test_concurrent_requests_keep_their_own_accept(srv, alone):
    """Exact and topk:3 requests decode together: each is verified by its own mode (its
    `speculative` object says which); the exact ones get the text decoded alone."""
    before = srv.metrics()
    asks = [(p, a) for p in PROMPTS[:2] for a in ("exact", "topk:3")]

    async def one(client, p, accept):
        r = await client.completions.create(model=NAME, prompt=p, max_tokens=N_NEW, temperature=0,
                                            extra_body={"accept": accept})
        return r.choices[0].text, r.model_extra["speculative"]

    async def all_at_once():
        client = srv.aclient()
        return await asyncio.gather(*(one(client, p, a) for p, a in asks))

    got = asyncio.run(all_at_once())
    for (p, accept), (text, spec) in zip(asks, got):
        assert (spec["accept"], spec["exact"]) == (accept, accept == "exact")
        if accept == "exact":
            assert matches(text, alone[p]) and spec["n_lenient"] == 0, (p, text)
    assert sum(spec["n_lenient"] for _, spec in got) > 0
    after = srv.metrics()
    total, n = (after.get((name, ()), 0) - before.get((name, ()), 0)
                for name in ("draftwise_batch_size_sum", "draftwise_batch_size_count"))
    assert total / n > 1.5  # the requests shared rounds


def test_cancelled_request_frees_its_slot_mid_batch(srv, alone):
    """Two streams decode together; one client leaves mid-stream: its sequence is freed at once
    (not when its 200 tokens would end) and serves the next request, while the other stream goes
    on, unchanged."""
    throttle = srv.engine.throttle
    throttle.delay = 0.02
    body = {"prompt": PROMPTS[1], "max_tokens": 200, "temperature": 0, "stream": True}
    kept: list[str] = []

    def keep():
        r = srv.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=N_NEW,
                                          temperature=0, stream=True)
        kept.append("".join(c.choices[0].text for c in r if c.choices))

    try:
        holders = [threading.Thread(target=keep)]
        holders[0].start()
        with srv.http.stream("POST", "/v1/completions", json=body) as r:
            got = [ln for ln, _ in zip(r.iter_lines(), range(6)) if ln.startswith("data: {")]
            assert got and len(srv.app.state.worker.active) == 2  # mid-stream, beside the other
        wait_for(lambda: len(srv.app.state.worker.active) <= 1)  # freed before it would end
        r = srv.client.completions.create(model=NAME, prompt=PROMPTS[2], max_tokens=4,
                                          temperature=0)
        assert r.choices[0].text
        holders[0].join(30)
        assert matches(kept[0], alone[PROMPTS[0]])
    finally:
        throttle.reset()


def test_full_queue_gets_429_and_the_rest_complete(srv, alone):
    """The engine held inside a round with one request, eight waiting: the next gets 429; once
    the engine moves, the waiting ones join the batch and all complete."""
    throttle = srv.engine.throttle
    throttle.gate.clear()
    results: list = []

    def call(p):
        try:
            r = srv.client.completions.create(model=NAME, prompt=p, max_tokens=N_NEW,
                                              temperature=0)
            results.append((p, r.choices[0].text))
        except openai.APIStatusError as e:
            results.append((p, e.status_code))

    try:
        threads = [threading.Thread(target=call, args=(p,)) for p in PROMPTS * 2 + PROMPTS[:1]]
        threads[0].start()
        wait_for(lambda: srv.http.get("/health").json()["running"])
        for t in threads[1:]:
            t.start()
        wait_for(lambda: srv.http.get("/health").json()["queue_depth"] == 8)
        r = httpx.post(srv.url + "/v1/completions", json={"prompt": "x", "max_tokens": 4})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    finally:
        throttle.gate.set()
    for t in threads:
        t.join(30)
    assert len(results) == 9
    for p, text in results:
        assert matches(text, alone[p]), (p, text)


def test_timeout_frees_the_slot(ggufs):
    eng = batched(ggufs, 2)
    eng.throttle.delay = 0.3
    with live(eng, timeout_s=0.5, parallel=2) as s:
        with pytest.raises(openai.APIStatusError) as e:
            s.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=200)
        assert e.value.status_code == 504
        wait_for(lambda: not s.http.get("/health").json()["running"], timeout=5)


def test_parallel_needs_models_holding_the_sequences(ggufs):
    """A one-sequence engine (or an n-gram draft) cannot serve --parallel 2: one clear line."""
    from draftwise.server import create_app

    eng = build_engine(ggufs[0], "ngram", BackendOptions(threads=1, n_ctx=256, n_seq=2))
    with pytest.raises(DraftwiseError, match="--parallel 2 needs models holding 2 sequences.*"
                                             "n-gram"):
        create_app(eng, NAME, parallel=2)


def test_a_failed_round_fails_its_requests_and_the_server_goes_on(ggufs, alone):
    eng = batched(ggufs, 2)
    inner = eng.target._forward_many
    broken = {"on": True}

    def forward(feeds):
        if broken["on"] and any(f.n_logits > 1 for f in feeds):  # a verify of drafts
            raise RuntimeError("decode exploded")
        return inner(feeds)

    eng.target._forward_many = forward
    with live(eng, parallel=2) as s:
        with pytest.raises(openai.InternalServerError, match="decode exploded"):
            s.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=8, temperature=0,
                                        extra_body={"draft_k": 3})
        broken["on"] = False
        r = s.client.completions.create(model=NAME, prompt=PROMPTS[0], max_tokens=N_NEW,
                                        temperature=0)
        assert matches(r.choices[0].text, alone[PROMPTS[0]])
