"""`draftwise distill`: the stages in order, each skipped when its output exists.

<cache>/distill/NAME/
  options.json            the recipe (a --resume reloads it)
  base.gguf, base/        with --layers: the draft cut to N blocks (base/done.json: which)
  gen/                    items/NNNNN.json per training prompt (.npz: the target's rows of its
                          continuation), data.jsonl, scores.npz, done.json
  score/                  shard-NNNNN.npz (target top-k per position), done.json
  train/                  ckpt.pt while training; adapter.safetensors + adapter.json (LoRA) or
                          weights.safetensors (--full); done.json (losses, speed)
  export/done.json        models/NAME.gguf (+ NAME-<quant>.gguf), registered in models/local.json
  eval/                   conts/ (target continuations), report.md/.json, agreement.png, done.json
  timings.json            seconds per stage, summed over resumed runs
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from draftwise.distill.data import (
    GEN_SEQS,
    TARGET_SEQS,
    gen_scores,
    read_examples,
    run_gen,
    split_prompts,
)
from draftwise.distill.evaluate import EvalResult, run_eval
from draftwise.distill.gguffile import GGUFFile, choose_layers, cut_layers, read_gguf
from draftwise.distill.options import DistillOptions
from draftwise.distill.rundir import STAGES, RunDir, read_json, timed
from draftwise.errors import DraftwiseError
from draftwise.files import write_json
from draftwise.models import registry
from draftwise.models.catalog import QUANTS, catalog, resolve


@dataclass
class DistillResult:
    run: Path
    model: Path
    variants: dict[str, str]
    verdict: str
    report: Path
    timings: dict[str, float]


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console)


def name_taken(name: str) -> str | None:
    """Why NAME cannot be used for a new model, or None if it is free."""
    from draftwise.distill.export import export_path

    base = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1] in QUANTS else None
    if name in catalog() or (base and base in catalog()):
        return "a catalog model"
    if registry.get(name) is not None:
        return "a local model in `draftwise models list`"
    if export_path(name).exists():
        return f"a file {export_path(name)}"
    if RunDir.for_name(name).path.exists():
        return f"a distill run in {RunDir.for_name(name).path}"
    return None


def _train_line(train: dict) -> str:
    """One line on the train stage from its done.json."""
    line = (f"train: loss {train['loss_first']:.4f} -> {train['loss_last']:.4f} over "
            f"{train.get('steps_run', train['steps'])} steps, {train['tok_s']:.0f} tok/s "
            f"({train['precision']})")
    if train.get("val_losses"):
        start = train.get("val_start")
        line += (f"; validation loss {'' if start is None else f'{start:.4f} ->'} "
                 + " ".join(f"{v:.4f}" for v in train["val_losses"])
                 + f" (after each epoch), kept step {train['best_step']}"
                 + (" (stopped early)" if train["early_stop"] else ""))
    return line


def load_options(given: dict, resume: bool) -> DistillOptions:
    """New run: DistillOptions(**given). --resume: the stored recipe; a flag given with another
    value than the stored one is refused."""
    if not resume:
        opts = DistillOptions(**given)
        if (why := name_taken(opts.out)) is not None:
            raise DraftwiseError(f"{opts.out} exists ({why}); choose another --out NAME, or pass "
                                 "--resume to continue that run")
        return opts
    name = given.get("out")
    if not name:
        raise DraftwiseError("--resume needs --out NAME: the run to continue")
    run = RunDir.for_name(name)
    if not run.options_file.is_file():
        raise DraftwiseError(f"no distill run named {name} to resume ({run.path} has no "
                             "options.json); start it without --resume")
    stored = DistillOptions.from_dict(read_json(run.options_file))
    try:
        asked = DistillOptions(**{**stored.to_dict(), **given})
    except TypeError as e:
        raise DraftwiseError(f"bad options: {e}") from None
    diff = stored.differences(asked)
    if diff:
        raise DraftwiseError(f"{name} was started with other options ({', '.join(diff)}); resume "
                             "it with the same ones (or just --out NAME --resume)")
    return stored


def check_pair(opts: DistillOptions) -> None:
    """Refuse a pair whose vocabularies differ: the target's top-k ids must be the draft's ids."""
    from draftwise.doctor.report import check

    rep = check(opts.target, opts.draft, generate=False)
    if rep.verdict != "identical":
        raise DraftwiseError(f"cannot distill {opts.draft} into {opts.target}: `draftwise check` "
                             f"says {rep.verdict} ({rep.reason}); distill needs a draft with the "
                             "target's vocabulary (verdict identical)")


def _gguf(name: str, what: str) -> str:
    ref = resolve(name)
    if ref.kind != "gguf":
        raise DraftwiseError(f"distill runs the {what} through llama.cpp: give a GGUF model, not "
                             f"{name} ({ref.kind})")
    return ref.ref


def _keep(g: GGUFFile, opts: DistillOptions, split) -> list[int]:
    """The blocks --layers keeps; "similar" measures them on the training prompts."""
    keep = choose_layers(g.n_blocks, opts.layers, "first" if opts.layer_choice == "similar"
                         else opts.layer_choice)  # also checks the range
    if opts.layer_choice != "similar":
        return keep
    from draftwise.distill.data import render_ids
    from draftwise.distill.hfmodel import load_model
    from draftwise.distill.layers import similar_span

    be = _llama(str(g.path), opts)
    try:
        seqs = [render_ids(p, be) for p in split.train]
    finally:
        be.close()
    model, _ = load_model(g)
    return similar_span(model, seqs, g.n_blocks, opts.layers)


def _base(run: RunDir, opts: DistillOptions, draft_path: str, split, say) -> GGUFFile:
    """The draft to train: the draft itself, with --adapter the draft at --quant, or with
    --layers its cut (base.gguf)."""
    if opts.adapter:
        return read_gguf(_parent_variant(opts, draft_path, say))
    g = read_gguf(draft_path)
    if not opts.layers:
        return g
    if not run.is_done("base"):
        with timed(run, "base"):
            keep = _keep(g, opts, split)
            cut_layers(g, keep, run.base_gguf)
        run.mark_done("base", {"kept": keep, "of": g.n_blocks, "choice": opts.layer_choice})
    info = read_json(run.done("base"))
    say(f"base: {len(info['kept'])} of {info['of']} blocks ({info['choice']}): {info['kept']}")
    return read_gguf(run.base_gguf)


def _busy_note(opts: DistillOptions, say) -> None:
    """On a machine busier than its cores, threads of one forward wait on each other: on the
    2-core development machine at load ~7, one thread ran llama.cpp and training 3-10x faster."""
    import os

    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if opts.threads is None and cores > 1 and load > cores:
        say(f"note: the machine is busy (load {load:.1f} on {cores} cores); if this runs slowly, "
            "--threads 1 avoids threads waiting on each other")


def _llama(path: str, opts: DistillOptions, lora: str | None = None, n_seq: int = 1):
    from draftwise.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(path, n_ctx=opts.max_prompt_tokens + opts.max_tokens + 16,
                           threads=opts.threads, lora=lora, n_seq=n_seq)


def _parent_variant(opts: DistillOptions, draft_path: str, say) -> str | None:
    """The stock draft at the export's quantization (made like `models quantize` if missing;
    the draft itself when it is a file of that quantization)."""
    from draftwise.models.quantize import file_quant, quantize

    if file_quant(Path(draft_path)) == opts.quant:
        return draft_path
    try:
        return resolve(f"{opts.draft}-{opts.quant}").ref
    except DraftwiseError:
        pass
    say(f"making {opts.draft} at {opts.quant} to compare like for like")
    in_cat = opts.draft in catalog()
    return str(quantize(opts.draft if in_cat else draft_path, opts.quant,
                        allow_requantize=True, threads=opts.threads, progress=False))


def run_distill(given: dict, resume: bool = False, console: Console | None = None) -> DistillResult:
    """Run (or continue) a distillation; given: DistillOptions fields the user set."""
    con = console or Console(stderr=True)
    say = lambda msg: con.print(msg, highlight=False, markup=False)  # noqa: E731
    opts = load_options(given, resume)
    run = RunDir.for_name(opts.out)
    target_path = _gguf(opts.target, "target")
    draft_path = _gguf(opts.draft, "draft")
    if not resume:
        check_pair(opts)
        run.path.mkdir(parents=True, exist_ok=True)
        write_json(run.options_file, opts.to_dict())
    for stale in run.path.rglob("*.partial"):  # temporary files of a killed run
        stale.unlink(missing_ok=True)
    say(f"distill {opts.out}: {opts.recipe()}  [{run.path}]")
    _busy_note(opts, say)
    split = split_prompts(opts)
    base = _base(run, opts, draft_path, split, say)
    with _progress(con) if not run.is_done("train") else nullcontext() as bar:
        if not (run.is_done("gen") and run.is_done("score")):
            target = _llama(target_path, opts, n_seq=TARGET_SEQS if opts.target_mix else 1)
            try:
                if not run.is_done("gen"):
                    # --data: the continuations are given, the target only tokenizes them
                    draft = None if opts.data else _llama(str(base.path), opts, n_seq=GEN_SEQS)
                    try:
                        with timed(run, "gen"):
                            run_gen(run, opts, draft, target, bar)
                    finally:
                        if draft is not None:
                            draft.close()
                from draftwise.distill.score import labels, run_score, target_scores

                score = labels if opts.loss == "ce" else target_scores(target, opts.top_k)
                with timed(run, "score"):  # gen kept no target rows with --loss ce
                    run_score(run, read_examples(run), score, gen_scores(run), bar)
            finally:
                target.close()
        gen = read_json(run.done("gen"))
        if not run.is_done("train"):
            from draftwise.distill.score import read_scores
            from draftwise.distill.train import run_train, stop_requests

            examples = read_examples(run)
            with stop_requests() as stop, timed(run, "train"):
                run_train(run, opts, base, examples, read_scores(run, len(examples)), bar, stop)
    train = read_json(run.done("train"))
    say(_train_line(train))
    from draftwise.distill.export import run_export

    with timed(run, "export"):
        exp = run_export(run, opts, base, opts.draft, say)
    with _progress(con) if not run.is_done("eval") else nullcontext() as bar:
        with timed(run, "eval"):
            res = _evaluate(run, opts, split, target_path, draft_path, base, exp, say, bar)
    timings = run.timings()
    say("stages: " + ", ".join(f"{s} {timings[s]:.0f}s" for s in STAGES if s in timings) +
        f"; training data {gen['n_sequences']} sequences, {gen['n_tokens']} tokens")
    say(res.verdict)
    return DistillResult(run.path, Path(exp["file"]), exp["variants"], res.verdict,
                         run.path / "eval" / "report.md", timings)


def _evaluate(run: RunDir, opts: DistillOptions, split, target_path: str, draft_path: str,
              base: GGUFFile, exp: dict, say, bar) -> EvalResult:
    if run.is_done("eval"):
        return run_eval(run, split, None, {}, "", "", 0, 0)
    before, after = opts.draft, opts.out
    if opts.adapter:  # the draft at --quant, without and with the adapter
        before = opts.draft if str(base.path) == draft_path else f"{opts.draft}-{opts.quant}"
        paths = {before: str(base.path), after: str(base.path)}
    else:
        paths = {opts.draft: draft_path}
        if opts.layers:
            paths[f"{opts.out} (cut, untrained)"] = str(base.path)
        paths[opts.out] = exp["file"]
        if opts.quant in exp["variants"]:
            paths[f"{opts.draft}-{opts.quant}"] = _parent_variant(opts, draft_path, say)
            paths[f"{opts.out}-{opts.quant}"] = exp["variants"][opts.quant]
            before, after = f"{opts.draft}-{opts.quant}", f"{opts.out}-{opts.quant}"
    target = _llama(target_path, opts)  # one sequence: see evaluate.target_continuation
    drafts = {}
    try:
        for label, p in paths.items():
            drafts[label] = _llama(p, opts, exp.get("adapter") if label == after else None)
        label = "+".join(opts.categories) if opts.categories else Path(opts.file).stem
        return run_eval(run, split, target, drafts, before, after, opts.max_tokens,
                        opts.max_prompt_tokens, trained_label=None if opts.categories else label,
                        progress=bar)
    finally:
        for be in drafts.values():
            be.close()
        target.close()
