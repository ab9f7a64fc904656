"""The HTTP server under load: N concurrent streaming clients over loopback, with and without draft.

The server runs `draftwise.server.serve` in a child process, once with the target alone and once
with target + draft.

    python benchmarks/bench_server.py --target qwen2.5-coder-1.5b --draft qwen2.5-coder-0.5b \
        --clients 1 4 --requests 2 --max-tokens 96
    python benchmarks/bench_server.py            # tiny random models (a smoke run, seconds)

Each client sends its requests one after another (streaming /v1/completions, greedy, HumanEval
prompts, or short code prompts for the tiny models); all clients start together. Reports per configuration: time to first token (mean, p90),
tokens/s per stream (completion tokens over the time from first to last token), total tokens/s
(all completion tokens over the wall time), acceptance, and whether every output matches the
no-draft output.
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
from draftwise.loader import BackendOptions, build_engine
from draftwise.server import serve

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "evaldata" / "HumanEval.jsonl"
FALLBACK = ["def fibonacci(n):\n", "def is_prime(n: int) -> bool:\n",
            "class Stack:\n    def __init__(self):\n", "def quicksort(a):\n"]


def prompts(n: int, humaneval: bool) -> list[str]:
    if humaneval and EVAL.exists():
        rows = [json.loads(x) for x in EVAL.read_text().splitlines() if x.strip()]
        return [r["prompt"] for r in rows[:n]]
    return (FALLBACK * n)[:n]


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
    spec = SpecConfig(adaptive=True) if a.k == "auto" else SpecConfig(k=int(a.k))
    return BackendOptions(a.backend, a.threads, a.ctx), spec


def serve_child(a: argparse.Namespace) -> None:
    opts, spec = engine_args(a)
    engine = build_engine(a.target, None if a.draft == "none" else a.draft, opts, spec)
    serve(engine, "bench", port=a.serve, queue_size=a.queue, timeout_s=3600, log_level="warning")


async def one(http: httpx.AsyncClient, prompt: str, max_tokens: int) -> dict:
    """One streaming request: timings, text and the usage/speculative objects."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    text, usage = [], {}
    async with http.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["text"]:
                last = time.perf_counter()
                first = first or last
                text.append(chunk["choices"][0]["text"])
            if "usage" in chunk:
                usage = chunk
    n = usage["usage"]["completion_tokens"]
    return {"ttft": (first or t0) - t0, "n": n, "text": "".join(text),
            "tok_s": (n - 1) / (last - first) if first and last > first else 0.0,
            "spec": usage.get("speculative", {})}


async def load(url: str, work: list[list[str]], max_tokens: int) -> tuple[list[dict], float]:
    async with httpx.AsyncClient(base_url=url, timeout=3600) as http:
        await one(http, "def warmup():\n", 8)

        async def client(ps: list[str]) -> list[dict]:
            return [await one(http, p, max_tokens) for p in ps]

        t0 = time.perf_counter()
        per_client = await asyncio.gather(*(client(ps) for ps in work))
        wall = time.perf_counter() - t0
    return [r for rs in per_client for r in rs], wall


def run(url: str, clients: int, requests: int, max_tokens: int,
        humaneval: bool) -> tuple[dict, list[str]]:
    ps = prompts(clients * requests, humaneval)
    work = [ps[i * requests:(i + 1) * requests] for i in range(clients)]
    rows, wall = asyncio.run(load(url, work, max_tokens))
    ttft = sorted(r["ttft"] for r in rows)
    drafted = sum(r["spec"].get("drafted", 0) for r in rows)
    accepted = sum(r["spec"].get("accepted", 0) for r in rows)
    return {"ttft": statistics.mean(ttft), "ttft_p90": ttft[math.ceil(0.9 * len(ttft)) - 1],
            "stream": statistics.mean(r["tok_s"] for r in rows),
            "total": sum(r["n"] for r in rows) / wall, "tokens": sum(r["n"] for r in rows),
            "alpha": accepted / drafted if drafted else None}, [r["text"] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="default: tiny random models")
    ap.add_argument("--draft")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--requests", type=int, default=2, help="per client, one after another")
    ap.add_argument("--max-tokens", type=int, default=64)
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
    results = {}
    for name, d in (("no", None), ("yes", draft)):
        with served(target, d, a, queue=max(16, max(a.clients))) as url:
            for n in a.clients:
                results[name, n] = run(url, n, a.requests, a.max_tokens, bool(a.target))

    print(f"\ntarget {target}  draft {draft}  backend {a.backend}  K {a.k}  threads {a.threads}  "
          f"{a.requests} requests/client x {a.max_tokens} tokens, greedy, streaming")
    print(f"{'clients':>7} {'draft':>5} {'TTFT ms':>8} {'p90 ms':>7} {'tok/s/stream':>12} "
          f"{'tok/s total':>11} {'alpha':>6} {'speedup':>7} {'same':>5}")
    for n in a.clients:
        base, base_texts = results["no", n]
        for name in ("no", "yes"):
            row, texts = results[name, n]
            alpha = f"{row['alpha']:.2f}" if row["alpha"] is not None else "-"
            speedup = f"{row['total'] / base['total']:.2f}x" if name == "yes" else ""
            same = ("yes" if texts == base_texts else "NO") if name == "yes" else ""
            print(f"{n:>7} {name:>5} {1000 * row['ttft']:>8.0f} {1000 * row['ttft_p90']:>7.0f} "
                  f"{row['stream']:>12.1f} {row['total']:>11.1f} {alpha:>6} {speedup:>7} "
                  f"{same:>5}")

if __name__ == "__main__":
    main()
