"""Rebuild src/draftwise/bench/data/*.jsonl: small per-category subsets of Spec-Bench and HumanEval.

Usage: python benchmarks/make_prompt_sets.py [/work/shared/evaldata]
Rows are copied unchanged except that HumanEval prompts are wrapped in one instruction turn, so that
every built-in prompt goes through the model's chat template.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

N = 20
OUT = Path(__file__).resolve().parents[1] / "src/draftwise/bench/data"
# category -> Spec-Bench categories it draws from, with how many rows of each
SPEC_BENCH = {
    "chat": {"writing": 10, "roleplay": 4, "humanities": 3, "stem": 3},
    "translation": {"translation": N},
    "summarization": {"summarization": N},
    "qa": {"qa": N},
    "math": {"math_reasoning": N},
    "rag": {"rag": N},
}
CODE_INSTRUCTION = "Complete the following Python function.\n\n```python\n{prompt}```"


def main(src: Path) -> None:
    rows = [json.loads(line) for line in (src / "spec_bench_question.jsonl").open()]
    for cat, parts in SPEC_BENCH.items():
        out = []
        for sb_cat, n in parts.items():
            picked = [r for r in rows if r["category"] == sb_cat][:n]
            out += [{"id": f"spec_bench/{r['question_id']}", "category": cat, "source": sb_cat,
                     "turns": r["turns"]} for r in picked]
        _write(cat, out)
    he = [json.loads(line) for line in (src / "HumanEval.jsonl").open()]
    step = len(he) // N
    _write("code", [{"id": r["task_id"], "category": "code", "source": "humaneval",
                     "turns": [CODE_INSTRUCTION.format(prompt=r["prompt"])]}
                    for r in he[::step][:N]])


def _write(cat: str, rows: list[dict]) -> None:
    with (OUT / f"{cat}.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{cat}: {len(rows)} prompts")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/evaldata"))
