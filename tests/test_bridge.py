"""Cross-vocabulary drafting stays lossless: id maps and tokenizer bridges.

Exactness of sampling is tested with toy bigram LMs over string vocabularies (microseconds per
forward, exact marginals known), greedy exactness with toy LMs, tiny trained HF models and, marked
`real`, Gemma 3 270M drafting for Qwen2.5-Coder 1.5B.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from gguf import TokenType
from scipy.stats import chisquare
from test_pairing import _real, modified_qwen, pair_models  # noqa: F401  (fixtures)

from draftwise.backends.base import Backend, VocabInfo
from draftwise.config import GenerateConfig, SamplingConfig, SpecConfig
from draftwise.drafters.base import Draft
from draftwise.drafters.bridge import BridgeDrafter, IdMapDrafter, _text_after
from draftwise.engine import Engine
from draftwise.pairing.meta import ModelInfo
from draftwise.pairing.tokens import id_map, intersection_map

# ---------------------------------------------------------------- toy bigram LMs


class ToyLM(Backend):
    """A bigram LM over a string vocabulary: logits after token x are table[x]; the tokenizer takes
    the longest vocabulary string at each position."""

    name = "toy"

    def __init__(self, vocab: list[str], seed: int, scale: float = 1.5, n_ctx: int = 512,
                 table: np.ndarray | None = None, special: Sequence[int] = ()):
        self.strings = vocab
        rng = np.random.default_rng(seed)
        V = len(vocab)
        self.table = (table if table is not None else rng.normal(size=(V, V)) * scale).astype(
            np.float32)
        self.special = set(special)
        self.table[:, list(self.special)] = -30.0  # never generated
        self.n_ctx = n_ctx
        self.model_path = f"toy-{seed}"
        self.vocab = VocabInfo(n_vocab=V, n_tokens=V, bos_id=None, eos_ids=frozenset(),
                               add_bos=False)
        self._ctx: list[int] = []
        self._maxlen = max(map(len, vocab))

    @property
    def n_past(self) -> int:
        return len(self._ctx)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        out, i = [], 0
        while i < len(text):
            for n in range(min(self._maxlen, len(text) - i), 0, -1):
                j = self.strings.index(text[i:i + n]) if text[i:i + n] in self.strings else -1
                if j >= 0 and j not in self.special:
                    out.append(j)
                    i += n
                    break
            else:
                raise ValueError(f"cannot tokenize {text[i]!r}")
        return out

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(self.strings[i] for i in ids if i not in self.special)

    def token_text(self, token_id: int) -> str:
        return self.strings[token_id]

    def apply_chat_template(self, messages: list[dict]) -> str:
        raise NotImplementedError

    def _forward(self, tokens: Sequence[int], n_logits: int) -> np.ndarray:
        self._ctx.extend(tokens)
        return self.table[self._ctx[len(self._ctx) - n_logits:]]

    def rollback(self, n_keep: int) -> None:
        del self._ctx[n_keep:]

    def info(self) -> ModelInfo:
        types = [int(TokenType.CONTROL if i in self.special else TokenType.NORMAL)
                 for i in range(len(self.strings))]
        return ModelInfo(name=self.model_path, path=self.model_path, kind="toy",
                         tokenizer_model="toy", n_rows=len(self.strings),
                         tokens=list(self.strings), token_types=types)

    def transition(self, temperature: float) -> np.ndarray:
        """P [V, V]: P[x, y] = p(y | x)."""
        x = self.table.astype(np.float64) / temperature
        p = np.exp(x - x.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)


TARGET_VOCAB = ["a", "b", "c", "d", " ", "ab", "ba", " a", "cd"]
DRAFT_VOCAB = ["a", "b", "c", " ", "ab", "bc", " a", " b", "dd", "d"]


def toy_bridge(seed: int = 0) -> tuple[ToyLM, BridgeDrafter]:
    target = ToyLM(TARGET_VOCAB, seed)
    draft = ToyLM(DRAFT_VOCAB, seed + 100, scale=1.0)
    return target, BridgeDrafter(target, draft, intersection_map(target.info(), draft.info()))


def toy_idmap(seed: int = 0) -> tuple[ToyLM, IdMapDrafter]:
    """The draft's ordinary tokens are the target's; its special tokens sit elsewhere."""
    t_vocab = ["<s>", "<e>", *TARGET_VOCAB]
    d_vocab = ["<pad>", "<s>", *TARGET_VOCAB, "<e>", "<x>"]
    target = ToyLM(t_vocab, seed, special=(0, 1))
    draft = ToyLM(d_vocab, seed + 100, scale=1.0, special=(0, 1, len(d_vocab) - 2,
                                                            len(d_vocab) - 1))
    m = id_map(target.info(), draft.info())
    return target, IdMapDrafter(draft, m, target.vocab.n_vocab)


def test_toy_maps():
    target, bridge = toy_bridge()
    pairs = {DRAFT_VOCAB[d]: TARGET_VOCAB[t] for d, t in zip(bridge.d_ids, bridge.t_ids)}
    assert pairs == {s: s for s in ["a", "b", "c", " ", "ab", " a", "d"]}
    target, idm = toy_idmap()
    assert dict(zip(idm.d_ids.tolist(), idm.t_ids.tolist())) == {
        1: 0, **{i + 2: i + 2 for i in range(len(TARGET_VOCAB))}, len(TARGET_VOCAB) + 2: 1}


def _marginals(target: ToyLM, prompt: list[int], temperature: float, n: int) -> list[np.ndarray]:
    P = target.transition(temperature)
    m = [P[prompt[-1]]]
    for _ in range(n - 1):
        m.append(m[-1] @ P)
    return m


def _chi2(counts: np.ndarray, expected_p: np.ndarray, n: int) -> float:
    """p-value of a chi-square test; cells expected below 5 are pooled."""
    exp = expected_p * n
    small = exp < 5
    obs = np.append(counts[~small], counts[small].sum())
    e = np.append(exp[~small], exp[small].sum())
    if e[-1] == 0:
        obs, e = obs[:-1], e[:-1]
    return float(chisquare(obs, e * obs.sum() / e.sum()).pvalue)


def _sample_runs(target: ToyLM, drafter, prompt: list[int], temperature: float, n_runs: int,
                 n_tokens: int = 3, k: int = 3):
    eng = Engine(target, drafter, SpecConfig(k=k))
    out = np.zeros((n_runs, n_tokens), dtype=np.int64)
    drafted = accepted = 0
    for seed in range(n_runs):
        cfg = GenerateConfig(max_tokens=n_tokens + 1,
                             sampling=SamplingConfig(temperature=temperature, seed=seed))
        gen = eng.generate(prompt, cfg)
        out[seed] = gen.tokens[:n_tokens]
        drafted += gen.stats.n_drafted
        accepted += gen.stats.n_accepted
    return out, drafted, accepted


@pytest.mark.parametrize("make, temperature", [(toy_bridge, 1.0), (toy_bridge, 0.7),
                                               (toy_idmap, 1.0)])
def test_sampling_follows_target_distribution(make, temperature):
    """Chi-square on the marginals of the first three tokens and on the joint of the first two."""
    target, drafter = make(seed=1)
    prompt = target.tokenize("ab a")
    n_runs = 3000
    out, drafted, accepted = _sample_runs(target, drafter, prompt, temperature, n_runs)
    assert drafted > n_runs and 0 < accepted < drafted  # both branches of the verifier ran
    V = target.vocab.n_vocab
    marg = _marginals(target, prompt, temperature, 3)
    for pos in range(3):
        counts = np.bincount(out[:, pos], minlength=V)
        assert _chi2(counts, marg[pos], n_runs) > 1e-3, (pos, counts, marg[pos] * n_runs)
    joint = (marg[0][:, None] * target.transition(temperature)).ravel()
    counts = np.bincount(out[:, 0] * V + out[:, 1], minlength=V * V)
    assert _chi2(counts, joint, n_runs) > 1e-3


def test_chi_square_catches_an_unnormalized_q():
    """The test has power: reporting q before renormalizing over the shared tokens (here: half of
    it) makes the verifier accept drafts too often, which biases the output (seen at the second
    token, the first drafted one: the first is the target's own)."""

    class Liar(BridgeDrafter):
        def propose(self, *a, **kw):
            d = super().propose(*a, **kw)
            return Draft(d.tokens, None if d.q is None else 0.5 * d.q)

    target, honest = toy_bridge(seed=1)
    liar = Liar(target, honest.lm.backend, intersection_map(target.info(),
                                                            honest.lm.backend.info()))
    prompt = target.tokenize("ab a")
    out, _, _ = _sample_runs(target, liar, prompt, 1.0, 1500)
    marg = _marginals(target, prompt, 1.0, 2)
    assert _chi2(np.bincount(out[:, 1], minlength=target.vocab.n_vocab), marg[1], 1500) < 1e-3


@pytest.mark.parametrize("make", [toy_bridge, toy_idmap])
def test_toy_greedy_equals_autoregressive(make):
    rng = np.random.default_rng(0)
    for seed in range(12):
        target, drafter = make(seed=seed)
        prompt = "".join(rng.choice(list("abcd a"), size=int(rng.integers(1, 9))))
        cfg = GenerateConfig(max_tokens=24)
        want = Engine(target).generate(prompt, cfg).tokens
        got = Engine(target, drafter, SpecConfig(k=int(rng.integers(1, 6)))).generate(prompt, cfg)
        assert got.tokens == want, (seed, prompt)


def test_toy_bridge_accepts_everything_from_an_equal_draft():
    """A draft equal to the target (single-character vocabulary, so text has one tokenization)
    has every greedy draft accepted."""
    vocab = list("abcd ")
    table = ToyLM(vocab, 3).table
    target, draft = ToyLM(vocab, 3, table=table), ToyLM(vocab, 3, table=table)
    bridge = BridgeDrafter(target, draft, intersection_map(target.info(), draft.info()))
    gen = Engine(target, bridge, SpecConfig(k=4)).generate("ab", GenerateConfig(max_tokens=40))
    assert gen.stats.n_accepted == gen.stats.n_drafted > 20


def test_text_after_holds_back_partial_characters():
    b = "é".encode()
    vocab = {0: b"ab", 1: b[:1], 2: b[1:], 3: b" x"}

    def decode(ids):
        return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")

    assert _text_after(decode, [0], [1]) is None
    assert _text_after(decode, [0], [1, 2, 3]) == "é x"


# ---------------------------------------------------------------- tiny HF models

PROMPTS = ["def quicksort(a):", "The quick brown", "for i in range(", "Speculative decoding drafts",
           "hello world", "The dog"]


def _engines(pair_models, draft: str, k: int = 4):
    from draftwise.loader import BackendOptions, build_engine

    eng = build_engine(str(pair_models["target"]), str(pair_models[draft]),
                       BackendOptions(threads=1), SpecConfig(k=k))
    return eng, Engine(eng.target)


@pytest.mark.parametrize("draft, kind", [("bridged", BridgeDrafter), ("compat", IdMapDrafter)])
def test_tiny_greedy_equals_autoregressive(pair_models, draft, kind):
    eng, ar = _engines(pair_models, draft)
    assert isinstance(eng.drafter, kind)
    drafted = accepted = 0
    for prompt in PROMPTS:
        cfg = GenerateConfig(max_tokens=40)
        want = ar.generate(prompt, cfg)
        got = eng.generate(prompt, cfg)
        assert got.tokens == want.tokens and got.text == want.text, prompt
        drafted += got.stats.n_drafted
        accepted += got.stats.n_accepted
    assert accepted > 0.4 * drafted  # the bridge lines tokens up: the trained pair agrees


def test_tiny_sampling_through_both_drafters(pair_models):
    for draft in ("bridged", "compat"):
        eng, _ = _engines(pair_models, draft)
        V = eng.target.vocab.n_vocab
        cfg = GenerateConfig(max_tokens=24, sampling=SamplingConfig(temperature=0.8, seed=5))
        gen = eng.generate("The quick", cfg)
        assert gen.tokens and all(0 <= t < V for t in gen.tokens)
        assert gen.stats.n_drafted > 0


# ---------------------------------------------------------------- real GGUF models

CODE_PROMPTS = ["def quicksort(arr):\n", "# Sum the second column of a CSV file\nimport csv\n\n"]


@pytest.mark.real
def test_real_gemma_drafts_for_qwen_greedy_exact():
    from draftwise.loader import BackendOptions, build_engine

    eng = build_engine(_real("qwen2.5-coder-1.5b"), _real("gemma-3-270m"),
                       BackendOptions(n_ctx=512), SpecConfig(k=4))
    assert isinstance(eng.drafter, BridgeDrafter)
    ar = Engine(eng.target)
    drafted = accepted = 0
    for prompt in CODE_PROMPTS:
        cfg = GenerateConfig(max_tokens=32)
        want = ar.generate(prompt, cfg)
        got = eng.generate(prompt, cfg)
        assert got.tokens == want.tokens, prompt
        drafted += got.stats.n_drafted
        accepted += got.stats.n_accepted
    assert accepted > 0.3 * drafted
    eng.drafter.close()
    eng.target.close()


@pytest.mark.real
def test_real_modified_qwen_through_id_map(modified_qwen):  # noqa: F811
    from draftwise.loader import BackendOptions, build_engine

    eng = build_engine(_real("qwen2.5-coder-1.5b"), str(modified_qwen), BackendOptions(n_ctx=512),
                       SpecConfig(k=4))
    assert isinstance(eng.drafter, IdMapDrafter)
    assert 151935 not in eng.drafter.d_ids.tolist()
    ar = Engine(eng.target)
    cfg = GenerateConfig(max_tokens=32)
    got = eng.generate(CODE_PROMPTS[0], cfg)
    assert got.tokens == ar.generate(CODE_PROMPTS[0], cfg).tokens
    assert got.stats.n_accepted > 0.5 * got.stats.n_drafted
    eng.drafter.close()
    eng.target.close()
