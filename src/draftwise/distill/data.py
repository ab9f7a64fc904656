"""Stage `gen`: on-policy training data. The draft continues each training prompt (llama.cpp),
`samples` times (the first at the decoding mode's temperature, the others sampled at T=1, so that
few prompts still give varied data); optionally the target continues a fraction of them too.

The prompts are split once: training prompts [0, n) of each category (or of the file), held-out
prompts after them, and a few prompts of every other category; the training ids are recorded in
gen/done.json and the evaluation refuses any overlap. Each prompt's result is written to
gen/items/NNNNN.json as soon as it is done, so a killed run continues with the next prompt.

With --data the continuations are given ({"prompt", "completion"} rows, completed as raw text):
gen only tokenizes them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from draftwise.backends.base import Backend
from draftwise.bench.prompts import Prompt, load_prompts
from draftwise.config import SamplingConfig
from draftwise.distill.options import DistillOptions
from draftwise.distill.rundir import RunDir, read_json
from draftwise.errors import DraftwiseError
from draftwise.files import atomic_path, write_json
from draftwise.sampling import probs


@dataclass
class Example:
    """One training sequence: prompt ids [P] and the continuation [L] (EOS kept when reached)."""

    seq: int
    prompt_id: str
    category: str
    source: str  # draft | target
    prompt: list[int]
    cont: list[int]


@dataclass(frozen=True)
class Split:
    """train: training prompts; held_out: same categories (or file), never trained on; other:
    prompts of the other categories."""

    train: list[Prompt]
    held_out: list[Prompt]
    other: list[Prompt]


def load_completions(path: str) -> dict[str, tuple[Prompt, str]]:
    """id -> (raw-text prompt, completion) of a --data file, in file order."""
    out: dict[str, tuple[Prompt, str]] = {}
    for i, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DraftwiseError(f"{Path(path).name} line {i}: not valid JSON ({e.msg})") from None
        if not (isinstance(row, dict) and all(isinstance(row.get(k), str) and row[k]
                                              for k in ("prompt", "completion"))):
            raise DraftwiseError(f"{Path(path).name} line {i}: needs non-empty \"prompt\" and "
                                 "\"completion\" strings")
        pid = str(row.get("id", f"data/{len(out)}"))
        out[pid] = (Prompt(pid, "file", row["prompt"], chat=False), row["completion"])
    return out


def split_prompts(opts: DistillOptions) -> Split:
    if opts.file:
        rows = ([p for p, _ in load_completions(opts.data).values()] if opts.data
                else load_prompts(prompt_file=opts.prompts))
        if len(rows) < 2:
            raise DraftwiseError(f"{opts.file} has {len(rows)} prompt; distill needs at least 2 "
                                 "(training and held-out evaluation)")
        n = min(opts.n_prompts or max(1, int(0.8 * len(rows))), len(rows) - 1)
        m = opts.n_eval or len(rows) - n
        train, held = rows[:n], rows[n:n + m]
    else:
        train = load_prompts(opts.categories, None, opts.n_prompts, 0)
        held = load_prompts(opts.categories, None, opts.n_eval, opts.n_prompts)
    other = [p for c in opts.eval_categories
             for p in load_prompts([c], None, opts.n_eval_other, 0)] if opts.n_eval_other else []
    if {_key(p) for p in train} & {_key(p) for p in held + other}:
        raise DraftwiseError("training and evaluation prompts overlap; check the prompt file's ids")
    return Split(train, held, other)


def _key(p: Prompt) -> tuple[str, str]:
    return p.category, p.id


def render_ids(p: Prompt, target: Backend) -> list[int]:
    """The prompt as the target sees it in speculative decoding (its chat template)."""
    return target.tokenize(p.render(target.apply_chat_template))


def continue_ids(be: Backend, ids: list[int], max_tokens: int, temperature: float,
                 seed: int, cached: bool = False) -> list[int]:
    """Plain decoding of up to max_tokens after ids [P]; the end-of-generation token is kept
    (the draft should learn where the target stops). ids[:-1] stays cached on return;
    cached=True says it is there from the previous call with the same ids."""
    s = SamplingConfig(temperature=temperature)
    rng = np.random.default_rng(seed)
    be.rollback(len(ids) - 1 if cached else 0)
    logits = be.forward(ids[-1:] if cached else ids, 1)[-1]
    out: list[int] = []
    while len(out) < max_tokens:
        if s.greedy:
            tok = int(np.argmax(logits))
        else:
            p = probs(np.asarray(logits, dtype=np.float32)[None], s)[0]
            tok = int(rng.choice(len(p), p=p / p.sum()))
        out.append(tok)
        if tok in be.vocab.eos_ids or len(out) == max_tokens:
            break
        logits = be.forward([tok], 1)[-1]
    be.rollback(len(ids) - 1)
    return out


def given_continuation(target: Backend, ids: list[int], prompt: str, completion: str,
                       max_tokens: int) -> list[int]:
    """The tokens of completion after prompt (ids [P]), as the target tokenizes the whole text
    when that keeps the prompt's tokens, else on its own; cut to max_tokens."""
    full = target.tokenize(prompt + completion)
    cont = full[len(ids):] if full[:len(ids)] == ids else target.tokenize(completion, False)
    return cont[:max_tokens]


def run_gen(run: RunDir, opts: DistillOptions, draft: Backend | None, target: Backend,
            progress=None) -> dict:
    """Write gen/items/*.json, then gen/data.jsonl and gen/done.json; returns done.json.
    draft: None with --data (the continuations are given)."""
    if run.is_done("gen"):
        return read_json(run.done("gen"))
    split = split_prompts(opts)
    given = load_completions(opts.data) if opts.data else {}
    items = run.stage("gen") / "items"
    items.mkdir(exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    n_mix = round(opts.target_mix * len(split.train))
    mixed = set(rng.permutation(len(split.train))[:n_mix].tolist())
    task = progress.add_task("gen", total=len(split.train), info="") if progress else None
    t0, n_tok = time.perf_counter(), 0
    for i, p in enumerate(split.train):
        f = items / f"{i:05d}.json"
        if not f.is_file():
            ids = render_ids(p, target)
            rec: dict = {"id": p.id, "category": p.category, "prompt": ids, "conts": []}
            if len(ids) > opts.max_prompt_tokens:
                rec["skipped"] = f"{len(ids)} prompt tokens > {opts.max_prompt_tokens}"
            elif opts.data:
                rec["conts"].append({"source": "data", "cont": given_continuation(
                    target, ids, p.text, given[p.id][1], opts.max_tokens)})
                n_tok += len(rec["conts"][-1]["cont"])
            else:
                # the draft's own continuations (the first at the decoding mode's temperature,
                # more sampled at T=1 for variety), and with --target-mix the target's
                runs = [("draft", draft, opts.gen_temperature if s == 0 else
                         (opts.gen_temperature or 1.0)) for s in range(opts.samples)]
                if i in mixed:
                    runs.append(("target", target, opts.gen_temperature))
                for s, (src, be, temp) in enumerate(runs):
                    cont = continue_ids(be, ids, opts.max_tokens, temp,
                                        (opts.seed * 100_003 + i) * 101 + s,
                                        cached=any(r[0] == src for r in runs[:s]))
                    if any(c["cont"] == cont for c in rec["conts"]):
                        continue  # the same text again adds nothing
                    rec["conts"].append({"source": src, "cont": cont})
                    n_tok += len(cont)
            write_json(f, rec)
        if progress:
            dt = time.perf_counter() - t0
            progress.update(task, advance=1, info=f"{n_tok / dt:.1f} tok/s" if n_tok else "")
    examples, skipped = [], []
    for i in range(len(split.train)):
        rec = read_json(items / f"{i:05d}.json")
        if "skipped" in rec:
            skipped.append({"id": rec["id"], "category": rec["category"], "why": rec["skipped"]})
        for c in rec["conts"]:
            if c["cont"]:
                examples.append(Example(len(examples), rec["id"], rec["category"], c["source"],
                                        rec["prompt"], c["cont"]))
    if not examples:
        raise DraftwiseError("no training data: every prompt was skipped or got an empty "
                             "continuation; use other prompts or raise the prompt-token limit")
    write_jsonl(run.path / "gen" / "data.jsonl", examples)
    info = {"train_prompts": [{"id": p.id, "category": p.category} for p in split.train],
            "skipped": skipped, "n_sequences": len(examples),
            "n_tokens": sum(len(e.cont) for e in examples),
            "n_prompt_tokens": sum(len(e.prompt) for e in examples)}
    run.mark_done("gen", info)
    return info


def write_jsonl(path: Path, examples: list[Example]) -> None:

    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(asdict(e)) + "\n" for e in examples))


def read_examples(run: RunDir) -> list[Example]:
    lines = (run.path / "gen" / "data.jsonl").read_text().splitlines()
    return [Example(**json.loads(line)) for line in lines if line]
