"""The fifth distill run's prompt file: news German made by back-translation, as Spec-Bench-style
translation prompts, between the third run's training rows and the held-out rows.

    python benchmarks/make_backtranslated_prompts.py 320 benchmarks/data/distill_tqa_news.jsonl \
        [--model qwen2.5-coder-1.5b-q8_0] [--threads 2] [--extend FILE --start K]

The held-out translation rows are WMT14 news (DE-EN); Spec-Bench has only 80 of them, and
German of another domain (manual pages, the fourth run) taught the draft nothing about them.
News English is at hand: the CNN/DailyMail articles of Spec-Bench's summarization rows that no
built-in prompt set uses. A model translates their sentences (10-30 words) into German, greedy;
each German sentence, punctuation split off as in WMT's tokenized text, becomes "Translate
German to English: ...". The distill run then learns the target's translations of news German
back into English, the evaluation's own kind of text. Outputs that do not look German (too few
common German words, or an English function word left in) or that run on are dropped.

Rows: the 120 training rows of distill_tqa_v2.jsonl, then N back-translated prompts, then the
built-in translation and qa sets (40 held-out rows: `distill --n-prompts 120+N --n-eval 40`).
`--extend FILE --start K` keeps FILE's back-translated rows and adds N more, made from the
sentences after the first K (the ones FILE's run tried). Sentences are translated BATCH at a
time, one llama.cpp batch per step (distill's continue_many).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

from make_translation_prompts import BUILT_IN, rows, write_prompt_file

from draftwise.distill.data import Job, continue_many
from draftwise.loader import BackendOptions, load_backend

SPEC_BENCH = Path(__file__).resolve().parents[2] / "shared/evaldata/spec_bench_question.jsonl"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
GERMAN = {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "mit", "von", "zu", "den",
          "sich", "auf", "für", "im", "dem", "des", "sie", "er", "wurde", "hat", "auch", "es"}
ID = "news-backtranslated"
BATCH = 4  # sentences translated at once
ENGLISH = {"the", "and", "of", "with", "said", "was", "were", "has", "have", "is", "are", "for",
           "from", "by", "that", "this", "which", "who", "their", "been"}


def english_sentences() -> list[str]:
    """News sentences of the summarization rows that no built-in prompt set holds, shuffled."""
    used = {json.loads(line)["id"] for f in BUILT_IN.glob("*.jsonl")
            for line in f.read_text("utf-8").splitlines() if line.strip()}
    seen: set[str] = set()
    for line in SPEC_BENCH.read_text("utf-8").splitlines():
        row = json.loads(line)
        if row["category"] != "summarization" or f"spec_bench/{row['question_id']}" in used:
            continue
        text = row["turns"][0].removeprefix("Summarize:").replace("\n", " ")
        for s in SENTENCE_END.split(text):
            s = s.strip()
            words = s.split()
            if (10 <= len(words) <= 30 and s.endswith(".") and "@" not in s and "|" not in s
                    and not any(c in s for c in "‘’“”\"")):
                seen.add(s)
    rows = sorted(seen)
    random.Random(0).shuffle(rows)
    return rows


def german(text: str, n_words: int) -> str | None:
    """The first line of a model's translation, if it reads as German of a sensible length (no
    English function word left in it)."""
    line = text.strip().split("\n")[0].strip().strip('"')
    words = re.findall(r"\w+", line.lower())
    ok = (0.6 * n_words <= len(words) <= 1.6 * n_words and line.endswith(".")
          and sum(w in GERMAN for w in words) >= max(2, len(words) // 8)
          and not ENGLISH.intersection(words))
    return line if ok else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-q8_0")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--extend", type=Path, help="keep this file's back-translated rows")
    ap.add_argument("--start", type=int, default=0, help="skip the first K sentences")
    a = ap.parse_args()
    kept = [r for r in rows(a.extend) if json.loads(r)["id"].startswith(f"{ID}/")] \
        if a.extend else []
    backend = load_backend(a.model, BackendOptions(n_ctx=256, threads=a.threads, n_seq=BATCH))
    # the translation is the first line: stop there (the model may explain after it)
    newline = {t for t in range(backend.vocab.n_tokens) if "\n" in backend.detokenize([t])}
    made, tried, t0 = [], 0, time.perf_counter()
    todo = english_sentences()[a.start:]
    while len(made) < a.n and tried < len(todo):
        batch = todo[tried:tried + BATCH]
        tried += len(batch)
        jobs = [Job(backend.tokenize(backend.apply_chat_template(
            [{"role": "user", "content": f"Translate English to German: {s}"}])), 0.0, 0)
            for s in batch]
        for s, out in zip(batch, continue_many(backend, jobs, 96, newline)):
            de = german(backend.detokenize(out), len(s.split()))
            if de and len(made) < a.n:
                made.append(de)
        print(f"{tried} tried, {len(made)} kept, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    backend.close()
    print(f"{tried} sentences tried (from {a.start}), {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    write_prompt_file(a.out, made, ID, "spec_bench summarization, back-translated", kept)


if __name__ == "__main__":
    main()
