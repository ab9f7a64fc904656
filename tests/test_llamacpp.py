"""The llama.cpp backend and the engine on the real Qwen2.5-Coder pair (Q4_K_M 1.5B + 0.5B).

Greedy speculation is lossless only up to the backend's arithmetic: llama.cpp computes a batch of
4+ tokens with other matmul kernels than one token (Q4_K_M weights are repacked for a GEMM path),
so verify-pass logits differ slightly from one-token logits (Q8_0: bit-identical here).
benchmarks/logit_margins.py measures how far this moves the top-2 logit margin (the test below
re-checks one problem), so an output may leave plain decoding's only where the top-2 margin is
below that shift (NEAR_TIE, conftest.py). Draftwise's plain and speculative decoding are both
compared with a greedy loop written here directly on llama-cpp-python, so that a bug shared by
draftwise's loop and backend cannot hide.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import NEAR_TIE

from draftwise.compare import ar_reference, divergence
from draftwise.config import GenerateConfig, SpecConfig
from draftwise.drafters.model import ModelDrafter
from draftwise.drafters.ngram import NgramDrafter
from draftwise.engine import Engine

pytestmark = pytest.mark.real

EVAL = Path(__file__).parent / "data" / "humaneval_solutions.jsonl"  # see data/SOURCES.md
PROMPTS = ["def quicksort(a):\n", "def is_palindrome(s: str) -> bool:\n",
           "class LinkedList:\n    def __init__(self):\n", "# Read a CSV file and sum column 2\n"]


def test_rollback_then_forward_matches_fresh(qwen_pair):
    target = qwen_pair[0]
    ids = target.tokenize("def add(a, b):\n    return a + b\n")
    target.rollback(0)
    target.forward(ids[:3], 0)
    # Same batch shapes as below: batches of other sizes take other kernels (module docstring).
    fresh = target.forward(ids[3:], len(ids) - 3).copy()
    target.rollback(3)
    target.forward([100, 200, 300, 400], 4)
    target.rollback(3)
    again = target.forward(ids[3:], len(ids) - 3).copy()
    target.rollback(0)
    target.forward(ids[:3], 0)
    assert target.n_past == 3
    np.testing.assert_allclose(again, fresh, atol=1e-4)


def test_batched_logits_stay_close_to_single_token_logits(qwen_pair):
    """Measures what NEAR_TIE rests on: the top-2 margin shift between verify and one-token passes."""
    target = qwen_pair[0]
    row = json.loads(EVAL.read_text().splitlines()[0])
    ids = target.tokenize(row["prompt"] + row["canonical_solution"])[:96]
    target.rollback(0)
    target.forward(ids[:8], 0)
    single = np.stack([target.forward([t], 1)[0].copy() for t in ids[8:]])
    target.rollback(8)
    batched = np.concatenate([target.forward(ids[s:s + 5], len(ids[s:s + 5])).copy()
                              for s in range(8, len(ids), 5)])
    top = np.argsort(single, axis=1)[:, -2:]
    r = np.arange(len(single))
    shift = np.abs((batched[r, top[:, 1]] - batched[r, top[:, 0]])
                   - (single[r, top[:, 1]] - single[r, top[:, 0]]))
    assert shift.max() < NEAR_TIE
    assert (batched.argmax(1) == single.argmax(1)).mean() > 0.95


N_NEW = 48


def llama_cpp_greedy(llm, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """llama.cpp's greedy decoding without draftwise: the prompt in one decode, then one token per
    decode, each the argmax of the last row of logits. Returns the tokens [<= n] (cut before an
    end-of-generation token) and the top-2 logit margin where each was chosen [<= n]."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    llm.eval(ids)
    tokens: list[int] = []
    margins: list[float] = []
    while len(tokens) < n:
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                    shape=(llm.n_vocab(),))
        t = int(row.argmax())
        if llama_cpp.llama_vocab_is_eog(vocab, t):
            break
        top2 = np.partition(row, -2)[-2:]
        tokens.append(t)
        margins.append(float(top2[1] - top2[0]))
        llm.eval([t])
    return tokens, margins


@pytest.fixture(scope="module")
def llama_reference(qwen_paths):
    """{prompt: (prompt ids, tokens, margins)} of llama_cpp_greedy on the 1.5B target."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=qwen_paths[0], n_ctx=1024, n_threads=2, logits_all=False,
                          verbose=False)
    try:
        out = {}
        for p in PROMPTS:
            ids = llm.tokenize(p.encode(), add_bos=True, special=True)
            out[p] = (ids, *llama_cpp_greedy(llm, ids, N_NEW))
        return out
    finally:
        llm.close()


def _matches_reference(tokens, ref_tokens, ref_margins) -> bool:
    """True if identical; a divergence is allowed only where the reference had a near-tie."""
    div = divergence(tokens, ref_tokens, ref_margins)
    if not div.identical:
        assert div.ar_margin is not None and div.ar_margin < NEAR_TIE, div.describe()
    return div.identical


def test_plain_decoding_matches_llama_cpp_greedy(qwen_pair, llama_reference):
    target = qwen_pair[0]
    identical = 0
    for p in PROMPTS:
        ids, ref, margins = llama_reference[p]
        assert target.tokenize(p) == ids
        assert len(ref) == N_NEW  # no EOS within these: all 48 tokens are compared
        ar = Engine(target).generate(p, GenerateConfig(max_tokens=N_NEW))
        identical += _matches_reference(ar.tokens, ref, margins)
    assert identical >= len(PROMPTS) - 1


@pytest.mark.parametrize("kind", ["model", "ngram"])
def test_greedy_speculation_matches_llama_cpp_greedy_up_to_near_ties(qwen_pair, llama_reference,
                                                                     kind):
    target, draft = qwen_pair
    cfg = GenerateConfig(max_tokens=N_NEW)
    drafter = ModelDrafter(draft) if kind == "model" else NgramDrafter()
    sd_engine = Engine(target, drafter, SpecConfig(k=4))
    identical = 0
    for p in PROMPTS:
        _, ref, margins = llama_reference[p]
        sd = sd_engine.generate(p, cfg)
        identical += _matches_reference(sd.tokens, ref, margins)
        # and against draftwise's own plain decoding, with its margins
        ar_tokens, ar_margins = ar_reference(target, p, cfg)
        _matches_reference(sd.tokens, ar_tokens, ar_margins)
        assert sd.stats.n_drafted > 0
        if kind == "model":
            assert sd.stats.alpha > 0.5  # the 0.5B agrees with the 1.5B most of the time
    assert identical >= len(PROMPTS) // 2


def test_chat_template_and_eos(qwen_pair):
    target, draft = qwen_pair
    prompt = target.apply_chat_template([{"role": "user", "content": "Say just: hello"}])
    assert prompt.startswith("<|im_start|>") and prompt.rstrip().endswith("assistant")
    out = Engine(target, ModelDrafter(draft), SpecConfig(k=3)).generate(
        prompt, GenerateConfig(max_tokens=40))
    assert out.stats.finish_reason == "stop" and "hello" in out.text.lower()
