"""Prompt sets for `bench` and `advise`: built-in categories (data/*.jsonl) or a user JSONL file.

A JSONL row is {"prompt": "..."} (sent as raw text) or {"turns": ["...", ...]} (the first turn is
sent through the model's chat template); optional "id" and "category".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from draftwise.errors import DraftwiseError

CATEGORIES = ("code", "chat", "summarization", "translation", "qa", "math", "rag")
ALIASES = {"writing": "chat", "coding": "code", "math_reasoning": "math",
           "summarize": "summarization"}


@dataclass(frozen=True)
class Prompt:
    """One benchmark prompt: raw text, or a user message for the chat template (chat=True)."""

    id: str
    category: str
    text: str
    chat: bool

    def render(self, apply_chat_template) -> str:
        """The text the model sees; apply_chat_template(messages) -> str is the backend's."""
        if self.chat:
            return apply_chat_template([{"role": "user", "content": self.text}])
        return self.text


def _parse_row(line: str, where: str, default_id: str, default_cat: str) -> Prompt:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DraftwiseError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise DraftwiseError(f"{where}: expected an object with \"prompt\" or \"turns\"")
    if isinstance(row.get("prompt"), str) and row["prompt"]:
        text, chat = row["prompt"], False
    elif isinstance(row.get("turns"), list) and row["turns"] and isinstance(row["turns"][0], str) \
            and row["turns"][0]:
        text, chat = row["turns"][0], True
    else:
        raise DraftwiseError(f"{where}: needs a non-empty \"prompt\" string or \"turns\" list")
    return Prompt(str(row.get("id", default_id)), str(row.get("category", default_cat)), text, chat)


def read_jsonl(text: str, name: str, category: str) -> list[Prompt]:
    """Parse JSONL text (blank lines skipped) into prompts."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            out.append(_parse_row(line, f"{name} line {i}", f"{category}/{len(out)}", category))
    return out


def builtin(category: str) -> list[Prompt]:
    """The built-in prompts of one category (20 each)."""
    cat = ALIASES.get(category.lower(), category.lower())
    if cat not in CATEGORIES:
        raise DraftwiseError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    text = resources.files("draftwise.bench").joinpath("data", f"{cat}.jsonl").read_text("utf-8")
    return read_jsonl(text, f"{cat}.jsonl", cat)


def load_prompts(categories: Sequence[str] = (), prompt_file: str | None = None,
                 n_prompts: int | None = None, offset: int = 0) -> list[Prompt]:
    """Prompts [offset : offset + n_prompts] of each category, or of the file if one is given.

    No categories and no file means the `code` category.
    """
    if n_prompts is not None and n_prompts < 1:
        raise DraftwiseError(f"the number of prompts must be >= 1, got {n_prompts}")
    if offset < 0:
        raise DraftwiseError(f"the prompt offset must be >= 0, got {offset}")
    end = None if n_prompts is None else offset + n_prompts
    if prompt_file:
        path = Path(prompt_file).expanduser()
        if not path.is_file():
            raise DraftwiseError(f"prompt file {prompt_file} does not exist")
        rows = read_jsonl(path.read_text("utf-8"), path.name, "file")
        if not rows:
            raise DraftwiseError(f"prompt file {prompt_file} holds no prompts (one JSON object "
                                 "with \"prompt\" or \"turns\" per line)")
        sets = [rows]
    else:
        sets = [builtin(c) for c in (categories or ("code",))]
    out = [p for rows in sets for p in rows[offset:end]]
    if not out:
        raise DraftwiseError(f"no prompts left after skipping the first {offset}")
    return out
