"""`draftwise check`: metadata reading, vocabulary comparison, verdicts, reports, bad input.

Tiny models: a trained byte-level BPE target, a trained draft with a SentencePiece-style tokenizer
(bridged), and a noisy copy of the target whose tokenizer moves <eos> to a new special id and whose
embeddings gain padding rows (compatible). Tiny GGUF files are written with gguf.GGUFWriter.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest

from draftwise.doctor.render import run_check
from draftwise.doctor.report import check
from draftwise.errors import DraftwiseError
from draftwise.pairing.meta import read_info
from draftwise.pairing.tokens import id_map, intersection_map, match_vocab

# ---------------------------------------------------------------- tiny HF models (shared fixtures)


def build_spm_tokenizer(out: Path, vocab_size: int = 300):
    """A BPE tokenizer with SentencePiece conventions ('▁' for spaces, a BOS on every encode)."""
    from tiny import CORPUS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    alphabet = sorted(set(string.printable) - set(" \x0b\x0c\r")) + ["▁"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet,
                                  special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"])
    tk.train_from_iterator(CORPUS, trainer)
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                      special_tokens=[("<bos>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.save_pretrained(out)
    return tok


def train(path: Path, tok, steps: int = 80, seed: int = 0) -> None:
    """Fit a tiny model to the corpus (so that a draft and a target agree often); saves in place."""
    import torch
    from tiny import CORPUS
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and the machine is shared
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    seqs = [tok(t)["input_ids"] + [tok.eos_token_id] for t in dict.fromkeys(CORPUS)]
    n = max(map(len, seqs))
    ids = torch.tensor([s + [tok.eos_token_id] * (n - len(s)) for s in seqs])
    labels = torch.tensor([s + [-100] * (n - len(s)) for s in seqs])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(path)
    torch.set_num_threads(threads)


def build_compat_draft(target: Path, out: Path, noise: float = 0.003) -> Path:
    """The target's weights and tokenizer, but id 0 becomes '<pad>', '<eos>' moves to a new special
    id n, and the embeddings get padding rows up to a multiple of 64."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    spec = json.loads((target / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    eos_id = vocab.pop("<eos>")
    vocab["<pad>"] = eos_id
    n = len(vocab)
    for a in spec["added_tokens"]:
        if a["content"] == "<eos>":
            a["content"] = "<pad>"
    spec["added_tokens"].append({**spec["added_tokens"][0], "id": n, "content": "<eos>"})
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(spec))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), eos_token="<eos>",
                                  pad_token="<pad>")
    assert tok.eos_token_id == n
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    model.resize_token_embeddings(n + 1, pad_to_multiple_of=64, mean_resizing=False)
    with torch.no_grad():
        for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            w[n] = w[eos_id]
            w[eos_id] = -w[eos_id]
            w[n + 1:] = 0.0
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    model.config.eos_token_id = n
    model.generation_config.eos_token_id = n
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_pair_models(root: Path) -> dict[str, Path]:
    """target (byte-level BPE), bridged draft (SentencePiece-style), compat draft; idempotent."""
    from tiny import build_model, build_tokenizer

    paths = {name: root / name for name in ("target", "bridged", "compat")}
    if all((p / "config.json").exists() for p in paths.values()):
        return paths
    tok = build_tokenizer(root / "tok")
    build_model(paths["target"], seed=0, tok=tok, init_range=0.05)
    train(paths["target"], tok, seed=0)
    spm = build_spm_tokenizer(root / "spm")
    build_model(paths["bridged"], seed=1, tok=spm, init_range=0.05)
    train(paths["bridged"], spm, seed=1)
    build_compat_draft(paths["target"], paths["compat"])
    return paths


@pytest.fixture(scope="session")
def pair_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.getbasetemp() / "pair-models"
    root.mkdir(exist_ok=True)
    return build_pair_models(root)


# ---------------------------------------------------------------- tiny GGUF files

TOKENS = ["<eos>", *"abcdefgh", "Ġa", "Ġb", "ab", "cd", "Ġab"]


def write_gguf(path: Path, tokens=TOKENS, types=None, rows: int | None = None,
               arch: str = "llama", gtype: str | None = None, tensors: bool = True,
               tokenizer: bool = True, ctx: int = 2048, n_embd: int = 8,
               tok_model: str = "gpt2") -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    if gtype:
        w.add_type(gtype)
    w.add_context_length(ctx)
    if tokenizer:
        w.add_tokenizer_model(tok_model)
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types(types or [gguf.TokenType.CONTROL if t.startswith("<") else
                                    gguf.TokenType.NORMAL for t in tokens])
        w.add_eos_token_id(0)
        w.add_add_bos_token(False)
    if tensors:
        w.add_tensor("token_embd.weight", np.zeros((rows or len(tokens), n_embd), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture()
def ggufs(tmp_path):
    other = ["<s>", "</s>", *"abcdefgh", "▁a", "▁b", "ba", "dc"]
    return {
        "target": write_gguf(tmp_path / "target.gguf", n_embd=64),
        "same": write_gguf(tmp_path / "same.gguf", n_embd=16),
        "padded": write_gguf(tmp_path / "padded.gguf", rows=len(TOKENS) + 11, n_embd=16),
        "added": write_gguf(tmp_path / "added.gguf", tokens=[*TOKENS, "<|extra|>"], n_embd=16),
        "other": write_gguf(tmp_path / "other.gguf", tokens=other, n_embd=16, tok_model="llama"),
        "disjoint": write_gguf(tmp_path / "disjoint.gguf", tokens=["<s>", "x", "y", "z"]),
        "big": write_gguf(tmp_path / "big.gguf", n_embd=128, ctx=512),
        "clip": write_gguf(tmp_path / "clip.gguf", arch="clip"),
        "adapter": write_gguf(tmp_path / "adapter.gguf", gtype="adapter"),
        "vocab_only": write_gguf(tmp_path / "vocab.gguf", tensors=False),
        "no_tok": write_gguf(tmp_path / "notok.gguf", tokenizer=False),
    }


# ---------------------------------------------------------------- verdicts on GGUF metadata


def test_gguf_meta_fields(ggufs):
    info = read_info(str(ggufs["padded"]))
    assert (info.kind, info.architecture, info.tokenizer_model) == ("gguf", "llama", "gpt2")
    assert info.tokens == TOKENS and info.n_rows == len(TOKENS) + 11
    assert info.eos_id == 0 and info.add_bos is False and info.context_length == 2048
    assert info.n_params == (len(TOKENS) + 11) * 16


@pytest.mark.parametrize("draft, verdict", [("same", "identical"), ("padded", "compatible"),
                                            ("added", "compatible"), ("other", "bridged"),
                                            ("disjoint", "incompatible")])
def test_verdicts(ggufs, draft, verdict):
    r = check(str(ggufs["target"]), str(ggufs[draft]), generate=False)
    assert r.verdict == verdict, r.reason
    assert r.exit_code == {"bridged": 1, "incompatible": 2}.get(verdict, 0), r.items


def test_compatible_reasons_name_the_difference(ggufs):
    r = check(str(ggufs["target"]), str(ggufs["padded"]), generate=False)
    assert "padding rows" in r.reason
    ids = next(i for i in r.items if i.name == "token ids")
    assert "padding rows: target 0, draft 11" in ids.detail
    r = check(str(ggufs["target"]), str(ggufs["added"]), generate=False)
    assert "special or added tokens" in r.reason


def test_bigger_draft_and_short_context_warn(ggufs):
    r = check(str(ggufs["target"]), str(ggufs["big"]), generate=False)
    status = {i.name: i.status for i in r.items}
    assert status["size"] == "warn" and status["context"] == "warn"
    assert r.verdict == "identical" and r.exit_code == 1
    assert {c.rule: c.ok for c in r.checklist}["the draft is smaller than the target"] is False


def test_id_map_and_intersection(ggufs):
    t, added = read_info(str(ggufs["target"])), read_info(str(ggufs["added"]))
    m = id_map(t, added)
    assert list(m.draft_ids) == list(range(len(TOKENS)))  # '<|extra|>' has no target id
    assert m.is_identity(len(TOKENS))
    other = read_info(str(ggufs["other"]))
    inter = intersection_map(t, other)
    pairs = {other.tokens[d]: t.tokens[i] for d, i in zip(inter.draft_ids, inter.target_ids)}
    # byte-level 'Ġa' and SentencePiece '▁a' both spell ' a'; 'ab' is not a draft token
    assert pairs == {**{c: c for c in "abcdefgh"}, "▁a": "Ġa", "▁b": "Ġb"}
    assert match_vocab(t, other).kind == "different"


# ---------------------------------------------------------------- bad input: one clear line


@pytest.mark.parametrize("key, message", [
    ("clip", "is not a language model (architecture clip)"),
    ("adapter", "is not a language model (general.type=adapter)"),
    ("vocab_only", "is not a language model (it holds no tensors)"),
    ("no_tok", "has no tokenizer"),
])
def test_bad_gguf(ggufs, key, message):
    with pytest.raises(DraftwiseError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        check(str(ggufs["target"]), str(ggufs[key]), generate=False)
    assert "\n" not in str(e.value)


def test_unreadable_files(tmp_path, ggufs):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(ggufs["target"].read_bytes()[:200])
    locked = tmp_path / "locked.gguf"
    locked.write_bytes(ggufs["target"].read_bytes())
    locked.chmod(0)
    text = tmp_path / "model.bin"
    text.write_text("hello")
    cases = [(junk, "not a GGUF file"), (cut, "truncated or corrupt"), (text, "not a .gguf file"),
             (tmp_path, "without config.json"), (tmp_path / "nope.gguf", "unknown model")]
    import os

    if os.geteuid() != 0:  # root reads anything
        cases.append((locked, "cannot read"))
    for path, message in cases:
        with pytest.raises(DraftwiseError, match=message) as e:
            run_check(str(ggufs["target"]), str(path), json_out=True, generate=False)
        assert "\n" not in str(e.value), path


def test_truncated_gguf_fails_check(tmp_path, ggufs):
    """The header reads fine; the tensor data ends early."""
    import subprocess
    import sys

    raw = ggufs["target"].read_bytes()
    cut = tmp_path / "cut-data.gguf"
    cut.write_bytes(raw[:-40])
    with pytest.raises(DraftwiseError, match=rf"{cut} is truncated: its tensors need "
                                             rf"{len(raw):,} bytes but the file has "
                                             rf"{len(raw) - 40:,}") as e:
        run_check(str(ggufs["target"]), str(cut), json_out=True, generate=False)
    assert "\n" not in str(e.value)
    r = subprocess.run([sys.executable, "-m", "draftwise.cli", "check", str(ggufs["target"]),
                        str(cut), "--no-generate"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {e.value}"], r.stderr
    assert "verdict" not in r.stdout


def test_hf_without_tokenizer_or_not_an_lm(tmp_path, pair_models):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(pair_models["target"] / "config.json", bare / "config.json")
    with pytest.raises(DraftwiseError, match="has no usable tokenizer") as e:
        read_info(str(bare))
    assert "\n" not in str(e.value)
    cfg = json.loads((bare / "config.json").read_text())
    (bare / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
    with pytest.raises(DraftwiseError, match="not a causal language model"):
        read_info(str(bare))


# ---------------------------------------------------------------- tiny HF pairs, full report


def test_hf_pairs(pair_models, capsys):
    t, b, c = (str(pair_models[k]) for k in ("target", "bridged", "compat"))
    rb = check(t, b)
    assert rb.verdict == "bridged" and rb.exit_code == 1
    assert {i.name: i.status for i in rb.items}["draft generates"] == "pass"
    rc = check(t, c)
    assert rc.verdict == "compatible", rc.reason
    m = id_map(rc.target, rc.draft)
    eos_t, eos_d = rc.target.eos_id, rc.draft.eos_id
    assert eos_d != eos_t and dict(zip(m.draft_ids.tolist(), m.target_ids.tolist()))[eos_d] == eos_t
    assert rc.draft.n_rows % 64 == 0 and rc.draft.n_rows > rc.draft.n_tokens

    assert run_check(t, c, json_out=True) == rc.exit_code
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "compatible" and out["draft"]["n_rows"] == rc.draft.n_rows
    assert {i["name"] for i in out["items"]} >= {"tokenizer", "token ids", "special tokens",
                                                  "chat template", "context", "size", "family",
                                                  "draft generates"}
    assert run_check(t, b, json_out=False) == 1
    text = capsys.readouterr().out
    assert "Pairing checklist" in text and "verdict: bridged" in text


# ---------------------------------------------------------------- real GGUF models


def _real(name: str) -> str:
    from draftwise.models.pull import pull

    pull(name, progress=False)  # cached after the first time
    return name


@pytest.fixture(scope="session")
def modified_qwen(tmp_path_factory) -> Path:
    """A copy of Qwen2.5-Coder 0.5B whose last padding token '[PAD151935]' became the control token
    '<|extra_0|>' (same length, so the metadata is edited in place)."""
    import shutil

    import gguf

    from draftwise.models.catalog import entry
    from draftwise.pairing.ggufmeta import read_gguf_meta

    src = entry(_real("qwen2.5-coder-0.5b")).path
    out = tmp_path_factory.mktemp("modq") / "qwen-extra.gguf"
    shutil.copyfile(src, out)
    raw = bytearray(out.read_bytes()[:8 << 20])  # the metadata sits in the first 8 MB
    old, new = b"[PAD151935]", b"<|extra_0|>"
    assert raw.count(old) == 1 and len(old) == len(new)
    raw[raw.index(old):raw.index(old) + len(old)] = new
    types = read_gguf_meta(src).get("tokenizer.ggml.token_type")
    pattern = np.asarray(types, "<i4").tobytes()
    at = bytes(raw).index(pattern)
    raw[at + 4 * 151935:at + 4 * 151936] = np.int32(gguf.TokenType.CONTROL).tobytes()
    with open(out, "r+b") as f:
        f.write(raw)
    return out


@pytest.mark.real
def test_real_qwen_pair_identical():
    r = check(_real("qwen2.5-coder-1.5b"), _real("qwen2.5-coder-0.5b"), generate=False)
    assert r.verdict == "identical"
    assert {c.rule: c.ok for c in r.checklist}["token ids identical except special tokens"]


@pytest.mark.real
def test_real_gemma_qwen_bridged():
    r = check(_real("qwen2.5-coder-1.5b"), _real("gemma-3-270m"))
    assert r.verdict == "bridged" and r.exit_code == 1
    shared = next(i for i in r.items if i.name == "shared tokens")
    assert int(shared.detail.split()[0]) > 50_000
    assert {i.name: i.status for i in r.items}["draft generates"] == "pass"


@pytest.mark.real
def test_real_truncated_gguf_fails_check(tmp_path):
    """The first 10 MB of Gemma 3 270M (253 MB): the whole header, a sliver of the tensors."""
    from draftwise.models.catalog import entry

    head = tmp_path / "gemma-head.gguf"
    with open(entry(_real("gemma-3-270m")).path, "rb") as f:
        head.write_bytes(f.read(10 << 20))
    with pytest.raises(DraftwiseError, match=rf"{head} is truncated: its tensors need "
                                             r"253,1\d\d,\d\d\d bytes but the file has "
                                             r"10,485,760"):
        check(_real("qwen2.5-coder-0.5b"), str(head), generate=False)


@pytest.mark.real
def test_real_modified_qwen_compatible(modified_qwen):
    r = check(_real("qwen2.5-coder-1.5b"), str(modified_qwen), generate=False)
    assert r.verdict == "compatible", r.reason
    ids = next(i for i in r.items if i.name == "token ids")
    assert "'[PAD151935]' vs '<|extra_0|>'" in ids.detail
