"""Stage `gen`: on-policy training data. The draft continues each training prompt (llama.cpp),
`samples` times (the first at the decoding mode's temperature, the others sampled at T=1, so that
few prompts still give varied data); optionally the target continues a fraction of them too,
its top-k kept from the rows it decodes them from (gen/items/NNNNN.npz, then gen/scores.npz), so
that score reads only the draft's continuations.

The prompts are split once: training prompts [0, n) of each category (or of the file), held-out
prompts after them, and a few prompts of every other category; the training ids are recorded in
gen/done.json and the evaluation refuses any overlap. Prompts are decoded GEN_CHUNK at a time,
several sequences per batch (continue_many); each prompt's result is written to
gen/items/NNNNN.json when its chunk is done, so a killed run continues with the next chunk.

With --data the continuations are given ({"prompt", "completion"} rows, completed as raw text):
gen only tokenizes them.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from draftwise.backends.base import Backend, Feed
from draftwise.bench.prompts import Prompt, load_prompts
from draftwise.config import SamplingConfig
from draftwise.distill.options import DistillOptions
from draftwise.distill.rundir import RunDir, read_json
from draftwise.distill.topk import Scores, concat, load_scores, save_scores, top_k
from draftwise.errors import DraftwiseError
from draftwise.files import atomic_path, write_json
from draftwise.sampling import probs, sample

T = TypeVar("T")

GEN_CHUNK = 16  # prompts decoded together (a killed run redoes at most this many)
GEN_SEQS = 8  # sequences the draft decodes at once (TARGET_SEQS for the target)
TARGET_SEQS = 4


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


@dataclass(frozen=True)
class Job:
    """One continuation to decode: prompt ids [P], at temperature (0: greedy) with its own seed."""

    ids: list[int]
    temperature: float
    seed: int


def continue_many(be: Backend, jobs: Sequence[Job], max_tokens: int,
                  stop_ids: Collection[int] = ()) -> list[list[int]]:
    """Plain decoding of each job, up to max_tokens or an end-of-generation token (or one of
    stop_ids), which is kept (the draft should learn where the target stops). Up to be.n_seq
    jobs run at once, one batch per step (a batch of n one-token rows costs far less than n
    decodes on a CPU); a finished job's sequence takes the next job, whose prompt rides in the
    same batch. Leaves the cache empty."""
    return [cont for cont, _ in continue_rows(be, jobs, max_tokens, None, stop_ids)]


def continue_scored(be: Backend, jobs: Sequence[Job], max_tokens: int, k: int,
                    stop_ids: Collection[int] = ()) -> list[tuple[list[int], Scores | None]]:
    """continue_many, with (k > 0) each continuation's top-k of the rows it was decoded from:
    the same as teacher-forcing it afterwards up to the batch shape's rounding, at no pass."""
    keep = (lambda row: top_k(row, k)) if k else None
    return [(out, concat(rows) if k else None)
            for out, rows in continue_rows(be, jobs, max_tokens, keep, stop_ids)]


def continue_rows(be: Backend, jobs: Sequence[Job], max_tokens: int,
                  keep: Callable[[np.ndarray], T] | None,
                  stop_ids: Collection[int] = ()) -> list[tuple[list[int], list[T]]]:
    """continue_many, with keep(row) of each logits row [1, V] a token was decoded from (a
    view the next forward may overwrite: keep copies what it needs); None keeps nothing."""
    ends = be.vocab.eos_ids | frozenset(stop_ids)
    outs: list[list[int]] = [[] for _ in jobs]
    rows: list[list[T]] = [[] for _ in jobs]
    rngs = [np.random.default_rng(j.seed) for j in jobs]
    queue = deque(range(len(jobs)))
    owner: dict[int, int] = {}  # sequence -> job

    def start(seq: int, feeds: list[Feed]) -> None:
        owner[seq] = queue.popleft()
        be.rollback_seq(seq, 0)
        feeds.append(Feed(seq, jobs[owner[seq]].ids, 1))

    feeds: list[Feed] = []
    for seq in range(min(be.n_seq, len(jobs))):
        start(seq, feeds)
    while feeds:
        logits_rows = be.forward_many(feeds)
        nxt: list[Feed] = []
        for f, logits in zip(feeds, logits_rows):
            j = owner[f.seq]
            tok = _pick(logits[-1], jobs[j].temperature, rngs[j])
            outs[j].append(tok)
            if keep:
                rows[j].append(keep(logits[-1:]))
            if tok in ends or len(outs[j]) >= max_tokens:
                if queue:  # start() empties the sequence first
                    start(f.seq, nxt)
                else:
                    be.rollback_seq(f.seq, 0)
            else:
                nxt.append(Feed(f.seq, [tok], 1))
        feeds = nxt
    return list(zip(outs, rows))


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """The next token from logits [V]: argmax at temperature 0, else a sample."""
    s = SamplingConfig(temperature=temperature)
    if s.greedy:
        return int(np.argmax(logits))
    return sample(probs(np.asarray(logits, dtype=np.float32)[None], s)[0], rng)


def given_continuation(target: Backend, ids: list[int], prompt: str, completion: str,
                       max_tokens: int) -> list[int]:
    """The tokens of completion after prompt (ids [P]), as the target tokenizes the whole text
    when that keeps the prompt's tokens, else on its own; cut to max_tokens."""
    full = target.tokenize(prompt + completion)
    cont = full[len(ids):] if full[:len(ids)] == ids else target.tokenize(completion, False)
    return cont[:max_tokens]


def _gen_record(p: Prompt, target: Backend, opts: DistillOptions, given: dict) -> dict:
    """A prompt's gen record: its ids and, with --data, the given continuation (else none yet)."""
    ids = render_ids(p, target)
    rec: dict = {"id": p.id, "category": p.category, "prompt": ids, "conts": []}
    if len(ids) > opts.max_prompt_tokens:
        rec["skipped"] = f"{len(ids)} prompt tokens > {opts.max_prompt_tokens}"
    elif opts.data:
        rec["conts"].append({"source": "data", "cont": given_continuation(
            target, ids, p.text, given[p.id][1], opts.max_tokens)})
    return rec


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
    # the draft's own continuations (the first at the decoding mode's temperature, more sampled
    # at T=1 for variety), and with --target-mix the target's
    temps = [opts.gen_temperature] + [opts.gen_temperature or 1.0] * (opts.samples - 1)
    todo = [i for i in range(len(split.train)) if not (items / f"{i:05d}.json").is_file()]
    if progress:
        progress.update(task, advance=len(split.train) - len(todo))
    for c in range(0, len(todo), GEN_CHUNK):
        chunk = todo[c:c + GEN_CHUNK]
        recs = {i: _gen_record(split.train[i], target, opts, given) for i in chunk}
        jobs: dict[str, list[tuple[int, Job]]] = {"draft": [], "target": []}
        for i in chunk:
            if "skipped" in recs[i] or opts.data:
                continue
            runs = [("draft", t) for t in temps] + ([("target", opts.gen_temperature)]
                                                    if i in mixed else [])
            for s, (src, temp) in enumerate(runs):
                jobs[src].append((i, Job(recs[i]["prompt"], temp,
                                         (opts.seed * 100_003 + i) * 101 + s)))
        scored: dict[int, dict[int, Scores]] = {i: {} for i in chunk}  # item -> cont -> rows
        for src, be in (("draft", draft), ("target", target)):
            # the target's rows as it decodes are its scores (score needs no pass over them)
            k = opts.top_k if src == "target" and opts.loss != "ce" else 0
            outs = continue_scored(be, [j for _, j in jobs[src]], opts.max_tokens, k) \
                if jobs[src] else []
            for (i, _), (cont, rows) in zip(jobs[src], outs):
                if not any(x["cont"] == cont for x in recs[i]["conts"]):  # adds nothing
                    if rows is not None:
                        scored[i][len(recs[i]["conts"])] = rows
                    recs[i]["conts"].append({"source": src, "cont": cont})
        for i in chunk:
            n_tok += sum(len(x["cont"]) for x in recs[i]["conts"])
            if scored[i]:  # before the item: its .json marks it done
                save_scores(items / f"{i:05d}.npz", scored[i])
            write_json(items / f"{i:05d}.json", recs[i])
        if progress:
            dt = time.perf_counter() - t0
            progress.update(task, advance=len(chunk), info=f"{n_tok / dt:.1f} tok/s")
    examples, skipped = [], []
    kept: dict[int, Scores] = {}  # seq -> the target's rows gen kept for it
    for i in range(len(split.train)):
        rec = read_json(items / f"{i:05d}.json")
        if "skipped" in rec:
            skipped.append({"id": rec["id"], "category": rec["category"], "why": rec["skipped"]})
        npz = items / f"{i:05d}.npz"
        rows = load_scores(npz) if npz.is_file() else {}
        for j, c in enumerate(rec["conts"]):
            if c["cont"]:
                if j in rows:
                    kept[len(examples)] = rows[j]
                examples.append(Example(len(examples), rec["id"], rec["category"], c["source"],
                                        rec["prompt"], c["cont"]))
    if not examples:
        raise DraftwiseError("no training data: every prompt was skipped or got an empty "
                             "continuation; use other prompts or raise the prompt-token limit")
    write_jsonl(run.path / "gen" / "data.jsonl", examples)
    if kept:
        save_scores(run.path / "gen" / "scores.npz", kept)
    info = {"train_prompts": [{"id": p.id, "category": p.category} for p in split.train],
            "skipped": skipped, "n_sequences": len(examples),
            "n_tokens": sum(len(e.cont) for e in examples),
            "n_prompt_tokens": sum(len(e.prompt) for e in examples), "n_scored": len(kept)}
    run.mark_done("gen", info)
    return info


def write_jsonl(path: Path, examples: list[Example]) -> None:

    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(asdict(e)) + "\n" for e in examples))


def gen_scores(run: RunDir) -> dict[int, Scores]:
    """seq -> the target's Scores of the sequences gen decoded with the target (none before
    gen kept them)."""
    path = run.path / "gen" / "scores.npz"
    return load_scores(path) if path.is_file() else {}


def read_examples(run: RunDir) -> list[Example]:
    lines = (run.path / "gen" / "data.jsonl").read_text().splitlines()
    return [Example(**json.loads(line)) for line in lines if line]
