"""The steering experiment (benchmarks/steering.py): the styled data, the style detectors, and the
whole path on tiny GGUF models: distill --data --loss ce, then AR / exact / lossy with the stock
and the styled draft."""

import importlib.util
import json
from pathlib import Path

import pytest
from test_distill import given, home, in_home, tiny  # noqa: F401  (fixtures)

from draftwise.quality.sandbox import Limits

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


steering = _load("steering")


def test_styled_data_is_what_the_generator_writes():
    rows = _load("make_styled_data").rows()
    assert [json.loads(line) for line in steering.DATA.read_text().splitlines()] == rows
    assert len(rows) == 64 and [r["split"] for r in rows] == ["train"] * 48 + ["held_out"] * 16
    # held-out functions come from other templates, not variants of trained ones
    assert not {r["id"].split("-")[0] for r in rows[48:]} & {r["id"].split("-")[0]
                                                              for r in rows[:48]}


def test_references_pass_and_show_the_style():
    task = steering.Styled()
    probs = task.problems()
    assert len(probs) == 16
    for p, r in zip(probs, task.rows):
        assert task.check(p, r["completion"], Limits(wall_s=10)).passed, p.id
        assert steering.annotated(r["completion"]) and steering.google_docstring(r["completion"])
    plain = "def f(a, b: int) -> int:\n    return a\n"
    assert not steering.annotated(plain) and not steering.annotated("def f(a: int):\n")
    assert steering.annotated("def f(a: dict[str, int], *, b: int = 2) -> None:\n")
    assert steering.annotated("    def g(self, x: int) -> int:\n")
    assert not steering.annotated("x = 1\n") and not steering.google_docstring(plain)


@pytest.mark.parametrize("accept", ["topk:320"])
def test_whole_path_on_tiny_models(tiny, in_home, tmp_path, accept):  # noqa: F811
    from draftwise.distill.pipeline import run_distill

    res = run_distill(given(tiny, prompts=None, data=str(steering.DATA), out="tiny-styled",
                            n_prompts=48, steps=200, full=True, lr=5e-3, quant=None,
                            n_eval_other=0, max_tokens=96))
    out = tmp_path / "steer"
    steering.main(["-t", str(tiny["target"]), "-d", str(tiny["draft"]), "-d", str(res.model),
                   "--accept", accept, "-k", "4", "--n-problems", "12", "--max-tokens", "48",
                   "--threads", "1", "--out", str(out)])
    table = {t["mode"]: t for t in json.loads((out / "steering.json").read_text())}
    stock, styled = Path(tiny["draft"]).as_posix(), str(res.model)
    assert set(table) == {"AR", f"{stock} exact", f"{stock} {accept}", f"{styled} exact",
                          f"{styled} {accept}"}
    for d in (stock, styled):  # exact mode: the target's output whatever the draft
        assert table[f"{d} exact"]["differs"] == 0
        assert table[f"{d} exact"]["annotated"] == table["AR"]["annotated"]
    assert all(0 <= t["annotated"] <= 1 and 0 <= t["docstring"] <= 1 for t in table.values())
    # Accepting every drafted token lets the styled draft write into the output (from the second
    # token: the first is the target's own). A 64-wide model learns the style's pieces, not its
    # details: count completions with any of them (9 of 12 here; none without the styled draft).
    recs = json.loads((out / "quality.json").read_text())["records"]
    bits = ("def", "->", "int", "list", "str", "Args", "Return")
    defs = {m: sum(any(b in r["completion"] for b in bits) for r in recs if r["mode"] == m)
            for m in table}
    assert defs[f"{styled} {accept}"] >= 4 and defs["AR"] == defs[f"{stock} {accept}"] == 0, defs
    assert (out / "steering.md").read_text().startswith("| mode |")
    assert (out / "report.md").is_file() and (out / "quality.json").is_file()
