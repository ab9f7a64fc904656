"""The HTTP server under load: N concurrent streaming clients over loopback, with and without draft.

Two servers run `draftwise.server.serve` in child processes, one with the target alone and one
with target + draft; for each repeat and client count the two are loaded one after the other, in
an order that alternates with the repeat, so that a slow phase of the machine hits both alike.

    python benchmarks/bench_server.py --target qwen2.5-coder-1.5b-q8_0 \
        --draft qwen2.5-coder-0.5b-q4_0 --clients 1 4 --requests 2 --repeats 2 --max-tokens 64
    python benchmarks/bench_server.py            # tiny random models (a smoke run)

Each client sends its requests one after another (streaming /v1/completions, greedy, HumanEval
prompts from ../shared/evaldata or --prompts); all clients start together. Reports per
configuration: time to first token (mean, p90); tokens/s per stream, counted after the first
chunk (a speculative round can put several tokens into the first chunk: those are measured by
the time to first token, not the stream rate); total tokens/s (all completion tokens over the
wall time, prefill and queueing included); acceptance; the draft's speedup in both rates; and
whether every output matches the no-draft output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from draftwise.config import SpecConfig
from draftwise.loader import BackendOptions, load_backend, open_engine
from draftwise.server import serve

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "evaldata" / "HumanEval.jsonl"
# The tiny models hold 256 positions: HumanEval prompts do not fit; these do (smoke runs only).
TINY_PROMPTS = ["def quicksort(a):\n", "The quick brown fox", "for i in range(10):\n",
                "Speculative decoding drafts tokens"]


def prompts(n: int, path: Path) -> list[str]:
    """The first n prompts of a JSONL file with a "prompt" field; fails if it is missing."""
    if not path.is_file():
        raise SystemExit(f"prompt set {path} not found; pass --prompts FILE.jsonl")
    rows = [json.loads(x)["prompt"] for x in path.read_text().splitlines() if x.strip()]
    if len(rows) < n:
        raise SystemExit(f"{path} has {len(rows)} prompts; this run needs {n}")
    return rows[:n]


def tiny_pair() -> tuple[str, str]:
    """Build the test suite's tiny random models in a temp dir."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import build_model, build_tokenizer

    root = Path(tempfile.mkdtemp(prefix="draftwise-bench-"))
    tok = build_tokenizer(root / "tok")
    target = build_model(root / "target", seed=0, tok=tok)
    draft = build_model(root / "draft", seed=1, tok=tok, base=target, noise=0.005)
    return str(target), str(draft)


@contextmanager
def served(target: str, draft: str | None, a: argparse.Namespace, queue: int):
    """`serve()` in a child process (so the clients do not share its GIL); yields the base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", str(port), "--queue", str(queue), "--target",
           target, "--draft", draft or "none", "-k", a.k, "--backend", a.backend,
           "--ctx", str(a.ctx)] + (["--threads", str(a.threads)] if a.threads else [])
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > 600:
                raise SystemExit("the server did not come up in 10 minutes")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def engine_args(a: argparse.Namespace) -> tuple[BackendOptions, SpecConfig]:
    return BackendOptions(a.backend, a.threads, a.ctx), SpecConfig.parse(a.k)


def serve_child(a: argparse.Namespace) -> None:
    opts, spec = engine_args(a)
    with open_engine(a.target, None if a.draft == "none" else a.draft, opts, spec) as engine:
        serve(engine, "bench", port=a.serve, queue_size=a.queue, timeout_s=3600,
              log_level="warning")


async def one(http: httpx.AsyncClient, prompt: str, max_tokens: int, count) -> dict:
    """One streaming request: timings, text and the usage/speculative objects.
    count(text): tokens in a piece of text (the target's tokenizer)."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    text, usage, n_first = [], {}, 0
    async with http.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["text"]:
                last = time.perf_counter()
                if first is None:
                    first, n_first = last, count(chunk["choices"][0]["text"])
                text.append(chunk["choices"][0]["text"])
            if "usage" in chunk:
                usage = chunk
    n = usage["usage"]["completion_tokens"]
    after = n - n_first  # tokens streamed after the first chunk
    return {"ttft": (first or t0) - t0, "n": n, "text": "".join(text),
            "tok_s": after / (last - first) if first and last > first and after > 0 else None,
            "spec": usage.get("speculative", {})}


async def load(url: str, work: list[list[str]], max_tokens: int, count
               ) -> tuple[list[dict], float]:
    async with httpx.AsyncClient(base_url=url, timeout=3600) as http:
        await one(http, "def warmup():\n", 8, count)

        async def client(ps: list[str]) -> list[dict]:
            return [await one(http, p, max_tokens, count) for p in ps]

        t0 = time.perf_counter()
        per_client = await asyncio.gather(*(client(ps) for ps in work))
        wall = time.perf_counter() - t0
    return [r for rs in per_client for r in rs], wall


def run(url: str, ps: list[str], clients: int, requests: int, max_tokens: int,
        count) -> tuple[list[dict], float]:
    work = [ps[i * requests:(i + 1) * requests] for i in range(clients)]
    return asyncio.run(load(url, work, max_tokens, count))


def summary(rows: list[dict], wall: float) -> dict:
    """Pooled over repeats: rows of every request, wall the summed wall times."""
    ttft = sorted(r["ttft"] for r in rows)
    drafted = sum(r["spec"].get("drafted", 0) for r in rows)
    accepted = sum(r["spec"].get("accepted", 0) for r in rows)
    rates = [r["tok_s"] for r in rows if r["tok_s"] is not None]
    return {"ttft": statistics.mean(ttft), "ttft_p90": ttft[math.ceil(0.9 * len(ttft)) - 1],
            "stream": statistics.mean(rates) if rates else math.nan,
            "total": sum(r["n"] for r in rows) / wall, "tokens": sum(r["n"] for r in rows),
            "alpha": accepted / drafted if drafted else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="default: tiny random models")
    ap.add_argument("--draft")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--requests", type=int, default=2, help="per client, one after another")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the whole load, interleaved")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=Path, default=EVAL, help="JSONL with a prompt field")
    ap.add_argument("-k", default="4", help="draft length, or auto")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # child mode: serve on this port
    ap.add_argument("--queue", type=int, default=16, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve_child(a)
    if not 1 <= max(a.clients) <= 64:
        ap.error("--clients must be between 1 and 64")
    target, draft = (a.target, a.draft) if a.target else tiny_pair()
    if not draft or draft == "none":
        ap.error("give --draft (the comparison is with and without it)")
    n_prompts = max(a.clients) * a.requests
    ps = prompts(n_prompts, a.prompts) if a.target else (TINY_PROMPTS * n_prompts)[:n_prompts]
    tok = load_backend(target, BackendOptions(a.backend, 1, 256))

    def count(text: str) -> int:
        return len(tok.tokenize(text, add_special=False))

    rows = {(name, n): [] for name in ("no", "yes") for n in a.clients}
    walls = dict.fromkeys(rows, 0.0)
    texts: dict = {}
    queue = max(16, max(a.clients))
    with served(target, None, a, queue) as url_no, served(target, draft, a, queue) as url_yes:
        for rep in range(a.repeats):
            for n in a.clients:
                order = (("no", url_no), ("yes", url_yes))
                for name, url in order if rep % 2 == 0 else order[::-1]:
                    got, wall = run(url, ps, n, a.requests, a.max_tokens, count)
                    rows[name, n] += got
                    walls[name, n] += wall
                    texts[name, n, rep] = [r["text"] for r in got]
            print(f"repeat {rep + 1}/{a.repeats} done", flush=True)

    print(f"\ntarget {target}  draft {draft}  backend {a.backend}  K {a.k}  threads {a.threads}  "
          f"{a.requests} requests/client x {a.max_tokens} tokens x {a.repeats} repeats, greedy, "
          "streaming")
    print("tok/s/stream: after the first chunk; total: all tokens over the wall time")
    print(f"{'clients':>7} {'draft':>5} {'TTFT ms':>8} {'p90 ms':>7} {'tok/s/stream':>12} "
          f"{'tok/s total':>11} {'alpha':>6} {'stream x':>8} {'total x':>7} {'same':>5}")
    for n in a.clients:
        base = summary(rows["no", n], walls["no", n])
        for name in ("no", "yes"):
            row = summary(rows[name, n], walls[name, n])
            alpha = f"{row['alpha']:.2f}" if row["alpha"] is not None else "-"
            stream_x = total_x = same = ""
            if name == "yes":
                stream_x = f"{row['stream'] / base['stream']:.2f}x"
                total_x = f"{row['total'] / base['total']:.2f}x"
                same = "yes" if all(texts["yes", n, r] == texts["no", n, r]
                                    for r in range(a.repeats)) else "NO"
            print(f"{n:>7} {name:>5} {1000 * row['ttft']:>8.0f} {1000 * row['ttft_p90']:>7.0f} "
                  f"{row['stream']:>12.1f} {row['total']:>11.1f} {alpha:>6} {stream_x:>8} "
                  f"{total_x:>7} {same:>5}")

if __name__ == "__main__":
    main()
