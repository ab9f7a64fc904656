"""The HTTP server under load: N concurrent streaming clients over loopback, several servers.

Servers run in child processes: `draftwise.server.serve` with the target alone (unless --no-ar),
with target + draft once per --parallel value, and optionally llama-server with the same two GGUF
files (--llama-server BINARY: `-np --llama-np -md DRAFT --spec-type draft-simple
--spec-draft-n-max --llama-k`). For each repeat and client count the servers are loaded one after
the other, in an order that rotates with the repeat, so that a slow phase of the machine hits
all alike.

    python benchmarks/bench_server.py --target qwen2.5-coder-1.5b-q8_0 \
        --draft qwen2.5-coder-0.5b-q4_0 --clients 1 4 --requests 2 --repeats 2 --max-tokens 64
    python benchmarks/bench_server.py --target qwen2.5-coder-1.5b-q8_0 \
        --draft qwen2.5-coder-0.5b-q4_0 --no-ar --parallel 1 4 \
        --llama-server build/peers/cmake/bin/llama-server --clients 1 4 16 32 --requests 1
    python benchmarks/bench_server.py            # tiny random models (a smoke run)

Each client sends its requests one after another (streaming /v1/completions, greedy, HumanEval
prompts from ../shared/evaldata or --prompts); all clients start together. First every server
serves all the prompts one at a time ("alone", skipped with --no-alone): the reference its
loaded outputs are compared with. Reports per server and client count: time to first token
(p50, mean, p90); tokens/s per stream, counted after the first chunk (a speculative round can put
several tokens into the first chunk: those are measured by the time to first token, not the
stream rate); total tokens/s (all completion tokens over the wall time, prefill and queueing
included); acceptance; failed requests; the total rate relative to the first server; and how
many outputs equal the same request served alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import httpx

from draftwise.config import SpecConfig
from draftwise.loader import BackendOptions, load_backend, open_engine
from draftwise.models.catalog import resolve
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
    """Build the test suite's tiny random GGUF models (llama.cpp) in a temp dir."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import build_tokenizer, low_rank_noise, random_qwen2, write_tiny_gguf

    root = Path(tempfile.mkdtemp(prefix="draftwise-bench-"))
    tok = build_tokenizer(root / "tok")
    sd = random_qwen2(len(tok), seed=0)
    target = write_tiny_gguf(root / "target.gguf", root / "tok", tok, sd)
    draft = write_tiny_gguf(root / "draft.gguf", root / "tok", tok, low_rank_noise(sd, 0.1, 2, 1))
    return str(target), str(draft)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def draftwise_cmd(target: str, draft: str | None, parallel: int, a: argparse.Namespace,
                  queue: int, port: int) -> list[str]:
    """`serve()` in a child process (so the clients do not share its GIL)."""
    return [sys.executable, __file__, "--serve", str(port), "--queue", str(queue), "--target",
            target, "--draft", draft or "none", "-k", a.k, "--backend", a.backend,
            "--ctx", str(a.ctx), "--parallel", str(parallel)] + (
                ["--threads", str(a.threads)] if a.threads else [])


def llama_server_cmd(target: str, draft: str, a: argparse.Namespace, port: int) -> list[str]:
    """llama-server with the same GGUF files: -np slots of --ctx each, the draft at fixed K."""
    threads = str(a.threads or os.cpu_count() or 1)
    return [a.llama_server, "-m", resolve(target).ref, "-md", resolve(draft).ref,
            "--spec-type", "draft-simple", "--spec-draft-n-max", str(a.llama_k),
            "-np", str(a.llama_np), "-c", str(a.ctx * a.llama_np), "-t", threads, "-td", threads,
            "-ngl", "0", "--host", "127.0.0.1", "--port", str(port)]


@contextmanager
def served(cmd: list[str], port: int):
    """Run a server command; yields its base URL once /health answers 200."""
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
    opts = replace(opts, n_seq=a.parallel[0])
    with open_engine(a.target, None if a.draft == "none" else a.draft, opts, spec) as engine:
        serve(engine, "bench", port=a.serve, queue_size=a.queue, timeout_s=3600,
              log_level="warning", parallel=a.parallel[0])


def speculative(chunk: dict) -> dict:
    """{drafted, accepted} from our `speculative` object or llama-server's `timings`."""
    if "speculative" in chunk:
        return chunk["speculative"]
    t = chunk.get("timings") or {}
    return {"drafted": t.get("draft_n", 0), "accepted": t.get("draft_n_accepted", 0)}


async def one(http: httpx.AsyncClient, prompt: str, max_tokens: int, count) -> dict:
    """One streaming request: timings, text and the speculative counts, or its error.
    count(text): tokens in a piece of text (the target's tokenizer)."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "cache_prompt": False}  # llama-server: no prompt cache (draftwise has none)
    t0 = time.perf_counter()
    first = last = None
    text, n, spec, n_first = [], None, {}, 0
    try:
        async with http.stream("POST", "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"].get("message", "error event"))
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    last = time.perf_counter()
                    if first is None:
                        first, n_first = last, count(chunk["choices"][0]["text"])
                    text.append(chunk["choices"][0]["text"])
                if chunk.get("usage"):
                    n = chunk["usage"]["completion_tokens"]
                if "speculative" in chunk or "timings" in chunk:
                    spec = speculative(chunk)
    except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    out = "".join(text)
    n = count(out) if n is None else n
    after = n - n_first  # tokens streamed after the first chunk
    return {"ttft": (first or t0) - t0, "n": n, "text": out,
            "tok_s": after / (last - first) if first and last > first and after > 0 else None,
            "spec": spec}


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
    ok = [r for r in rows if "error" not in r]
    ttft = sorted(r["ttft"] for r in ok) or [math.nan]
    drafted = sum(r["spec"].get("drafted", 0) for r in ok)
    accepted = sum(r["spec"].get("accepted", 0) for r in ok)
    rates = [r["tok_s"] for r in ok if r["tok_s"] is not None]
    return {"ttft": statistics.mean(ttft), "ttft_p50": statistics.median(ttft),
            "ttft_p90": ttft[math.ceil(0.9 * len(ttft)) - 1],
            "stream": statistics.mean(rates) if rates else math.nan,
            "total": sum(r["n"] for r in ok) / wall, "tokens": sum(r["n"] for r in ok),
            "alpha": accepted / drafted if drafted else None, "errors": len(rows) - len(ok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="default: tiny random models")
    ap.add_argument("--draft")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--requests", type=int, default=2, help="per client, one after another")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the whole load, interleaved")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=Path, default=EVAL, help="JSONL with a prompt field")
    ap.add_argument("-k", default="4", help="draft length, or auto (adaptive; load-aware when "
                    "--parallel > 1)")
    ap.add_argument("--parallel", type=int, nargs="+", default=[1],
                    help="a draftwise server with the draft per value: requests decoded together")
    ap.add_argument("--no-ar", action="store_true", help="skip the server without the draft")
    ap.add_argument("--llama-server", help="llama-server binary: also load it (GGUF models)")
    ap.add_argument("--llama-np", type=int, default=4, help="llama-server's slots (-np)")
    ap.add_argument("--llama-k", type=int, default=3, help="llama-server's --spec-draft-n-max")
    ap.add_argument("--no-alone", action="store_true",
                    help="skip serving each prompt alone first (then `same` is not reported)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ctx", type=int, default=4096, help="context per sequence")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # child mode: serve on this port
    ap.add_argument("--queue", type=int, default=16, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        return serve_child(a)
    if not 1 <= max(a.clients) <= 64:
        ap.error("--clients must be between 1 and 64")
    target, draft = (a.target, a.draft) if a.target else tiny_pair()
    if not draft or draft == "none":
        ap.error("give --draft (the servers speculate with it)")
    if a.llama_server and not Path(a.llama_server).is_file():
        ap.error(f"no llama-server binary at {a.llama_server}; build it with "
                 "benchmarks/build_llama_peers.sh")
    n_prompts = max(a.clients) * a.requests
    ps = prompts(n_prompts, a.prompts) if a.target else (TINY_PROMPTS * n_prompts)[:n_prompts]
    tok = load_backend(target, BackendOptions(a.backend, 1, 256))

    def count(text: str) -> int:
        return len(tok.tokenize(text, add_special=False))

    queue = max(16, max(a.clients))
    servers: dict[str, tuple[list[str], int]] = {}  # name -> (command, port)
    if not a.no_ar:
        port = free_port()
        servers["ar"] = draftwise_cmd(target, None, 1, a, queue, port), port
    for n in a.parallel:
        port = free_port()
        servers[f"draftwise -np {n}"] = draftwise_cmd(target, draft, n, a, queue, port), port
    if a.llama_server:
        port = free_port()
        servers[f"llama-server -np {a.llama_np}"] = llama_server_cmd(target, draft, a, port), port
    names = list(servers)
    rows = {(name, n): [] for name in names for n in a.clients}
    walls = dict.fromkeys(rows, 0.0)
    alone: dict[str, list[str | None]] = {}
    with ExitStack() as stack:
        urls = {name: stack.enter_context(served(*servers[name])) for name in names}
        if not a.no_alone:
            for name in names:  # every prompt served alone: the reference for `same`
                got, _ = run(urls[name], ps, 1, len(ps), a.max_tokens, count)
                alone[name] = [r.get("text") for r in got]
            print("served alone: done", flush=True)
        for rep in range(a.repeats):
            for n in a.clients:
                for name in names[rep % len(names):] + names[:rep % len(names)]:
                    got, wall = run(urls[name], ps, n, a.requests, a.max_tokens, count)
                    rows[name, n] += [dict(r, prompt=i) for i, r in enumerate(got)]
                    walls[name, n] += wall
            print(f"repeat {rep + 1}/{a.repeats} done", flush=True)

    print(f"\ntarget {target}  draft {draft}  backend {a.backend}  K {a.k}  threads {a.threads}  "
          f"{a.requests} requests/client x {a.max_tokens} tokens x {a.repeats} repeats, greedy, "
          "streaming")
    print("tok/s/stream: after the first chunk; total: all tokens over the wall time; total x: "
          f"relative to {names[0]}; same: outputs equal to the request served alone")
    w = max(len(x) for x in names)
    print(f"{'server':<{w}} {'clients':>7} {'TTFT p50':>8} {'mean ms':>7} {'p90 ms':>7} "
          f"{'tok/s/stream':>12} {'tok/s total':>11} {'alpha':>6} {'errors':>6} {'total x':>7} "
          f"{'same':>7}")
    for n in a.clients:
        base = summary(rows[names[0], n], walls[names[0], n])
        for name in names:
            row = summary(rows[name, n], walls[name, n])
            alpha = f"{row['alpha']:.2f}" if row["alpha"] is not None else "-"
            same = "-"
            if name in alone:
                ok = [r for r in rows[name, n] if "error" not in r]
                same = f"{sum(r['text'] == alone[name][r['prompt']] for r in ok)}/{len(ok)}"
            print(f"{name:<{w}} {n:>7} {1000 * row['ttft_p50']:>8.0f} {1000 * row['ttft']:>7.0f} "
                  f"{1000 * row['ttft_p90']:>7.0f} {row['stream']:>12.1f} {row['total']:>11.1f} "
                  f"{alpha:>6} {row['errors']:>6} {row['total'] / base['total']:>6.2f}x {same:>7}")
    for (name, n), rs in rows.items():  # what went wrong, once per kind
        for err in dict.fromkeys(r["error"] for r in rs if "error" in r):
            print(f"error: {name}, {n} clients: {err}")


if __name__ == "__main__":
    main()
