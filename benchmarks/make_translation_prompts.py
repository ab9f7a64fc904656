"""The fourth distill run's prompt file: German sentences from Debian's manpages-de as
Spec-Bench-style translation prompts, between the third run's training rows and held-out rows.

    apt-get download manpages-de && dpkg-deb -x manpages-de_*.deb manpages-de
    python benchmarks/make_translation_prompts.py manpages-de 240 benchmarks/data/distill_tqa_de.jsonl

Rows: the 120 training rows of distill_tqa_v2.jsonl, then N manual-page prompts, then the
built-in translation and qa sets (40 held-out rows: `distill --n-prompts 120+N --n-eval 40`).

Spec-Bench's translation rows (WMT14 DE-EN) are 80 in all, too few to train a draft on and still
hold some out; these add German prose of another domain (manual pages) in the same form:
"Translate German to English: <sentence>", punctuation split off by spaces as in WMT's
tokenized text. Sentences of 10-30 words ending in a full stop, without markup left over;
deduplicated, shuffled with a fixed seed. manpages-de is GPL-3.0-or-later, so the file is
built here, not kept in the repository.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
BUILT_IN = Path(__file__).resolve().parents[1] / "src/draftwise/bench/data"

FONT = re.compile(r"\\f(\[[A-Z]*\]|\(..|.)")  # \fB, \fI, \fP, \f[B], \f(CW
ESCAPES = {r"\-": "-", r"\(aq": "'", r"\(dq": '"', r"\(lq": "„", r"\(rq": "“", r"\(Fo": "»",
           r"\(Fc": "«", r"\ ": " ", r"\&": "", r"\,": "", r"\/": "", r"\e": "\\", r"\~": " "}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÄÖÜ])")


def paragraphs(page: str) -> list[str]:
    """Text lines joined into paragraphs; any request line (. or ') ends one."""
    out, cur = [], []
    for line in page.splitlines():
        if line.startswith((".", "'")):
            if cur:
                out.append(" ".join(cur))
                cur = []
            continue
        for k, v in ESCAPES.items():
            line = line.replace(k, v)
        cur.append(FONT.sub("", line).strip())
    if cur:
        out.append(" ".join(cur))
    return out


def wmt_tokens(s: str) -> str:
    """Punctuation as separate tokens, as in Spec-Bench's WMT rows ("ergeben , so Moore .")."""
    s = re.sub(r"\s*([,.;:?!)])(?=\s|$)", r" \1", s)
    s = re.sub(r"\(\s*", "( ", s)
    return re.sub(r"\s+", " ", s).strip()


def good(s: str) -> bool:
    words = s.split()
    return (10 <= len(words) <= 30 and s.endswith(".") and "\\" not in s and "@" not in s
            and "/" not in s and "=" not in s and sum(c.isdigit() for c in s) < 4
            and sum(w[:1].islower() for w in words) >= len(words) // 2)


def sentences(root: Path) -> list[str]:
    seen: set[str] = set()
    for f in sorted(root.rglob("*.gz")):
        page = gzip.decompress(f.read_bytes()).decode("utf-8", errors="replace")
        for para in paragraphs(page):
            seen.update(s for s in map(str.strip, SENTENCE_END.split(para)) if good(s))
    rows = sorted(seen)
    random.Random(0).shuffle(rows)
    return rows


def rows(path: Path) -> list[str]:
    return [line for line in path.read_text("utf-8").splitlines() if line.strip()]


def write_prompt_file(out: Path, german: list[str], id_prefix: str, source: str,
                      before: Sequence[str] = ()) -> None:
    """The third run's 120 training rows, the rows `before` (JSON lines kept from an earlier
    file), a translation prompt per German sentence, then the 40 built-in translation and qa
    rows (held out)."""
    extra = list(before) + [
        json.dumps({"id": f"{id_prefix}/{i}", "category": "translation", "source": source,
                    "turns": [f"Translate German to English: {wmt_tokens(s)}"]},
                   ensure_ascii=False) for i, s in enumerate(german, len(before))]
    held = rows(BUILT_IN / "translation.jsonl") + rows(BUILT_IN / "qa.jsonl")
    out.write_text("\n".join(rows(DATA / "distill_tqa_v2.jsonl")[:120] + extra + held) + "\n",
                   "utf-8")
    print(f"{out}: 120 + {len(extra)} training rows, {len(held)} held-out", file=sys.stderr)


def main(root: Path, n: int, out: Path) -> None:
    write_prompt_file(out, sentences(root)[:n], "manpages-de", "manpages-de")

if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
