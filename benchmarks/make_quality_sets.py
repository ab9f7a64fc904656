"""Rebuild src/draftwise/quality/data/: HumanEval (all 164 problems, unchanged) and the GSM8K
questions of Spec-Bench's math_reasoning set with their exact answers.

Usage: python benchmarks/make_quality_sets.py [/work/shared/evaldata]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/draftwise/quality/data"


def main(src: Path) -> None:
    shutil.copyfile(src / "HumanEval.jsonl", OUT / "humaneval.jsonl")
    rows = [json.loads(line) for line in (src / "spec_bench_question.jsonl").open()]
    with (OUT / "math.jsonl").open("w") as f:
        for r in rows:
            if r["category"] == "math_reasoning":
                answer = r["reference"][0].rsplit("####", 1)[1].strip().replace(",", "")
                f.write(json.dumps({"id": f"spec_bench/{r['question_id']}",
                                    "question": r["turns"][0], "answer": answer}) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/evaldata"))
