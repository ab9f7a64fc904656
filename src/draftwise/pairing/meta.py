"""What `check` needs to know about one model, read from its files without loading the weights."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from gguf import TokenType

from draftwise.errors import DraftwiseError
from draftwise.models.catalog import resolve
from draftwise.pairing.ggufmeta import read_gguf_meta

# GGUF architectures that are not causal language models (projectors, encoders, vocoders).
NON_LM_ARCHS = {"clip", "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder",
                "wavtokenizer-dec", "neo-bert", "modern-bert"}
_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


@dataclass
class ModelInfo:
    """One model's tokenizer and size facts. tokens [n_tokens] raw vocabulary entries; token_types
    [n_tokens] gguf.TokenType codes; n_rows is the logits width (>= n_tokens with padding rows)."""

    name: str
    path: str
    kind: str  # gguf | hf_dir | hub
    architecture: str | None = None
    family: str | None = None  # GGUF general.basename, HF model_type
    finetune: str | None = None
    tokenizer_model: str | None = None  # GGUF tokenizer.ggml.model, HF tokenizer class
    tokenizer_pre: str | None = None
    n_rows: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    add_bos: bool | None = None
    chat_template: str | None = None
    context_length: int | None = None
    n_params: int | None = None
    file_size: int | None = None
    tokens: list[str] = field(default_factory=list, repr=False)
    token_types: list[int] = field(default_factory=list, repr=False)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def token(self, i: int | None) -> str | None:
        return self.tokens[i] if i is not None and 0 <= i < len(self.tokens) else None

    def summary(self) -> dict:
        """Everything but the vocabulary (for JSON)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("tokens", "token_types")}
        out["chat_template"] = bool(self.chat_template)
        out["n_tokens"] = self.n_tokens
        return out


def read_info(name: str) -> ModelInfo:
    """Read a catalog name, GGUF file, HF directory or hub id. Raises DraftwiseError (one line)."""
    ref = resolve(name)
    if ref.kind == "gguf":
        return _from_gguf(name, ref.ref)
    return _from_hf(name, ref.ref, ref.kind)


def _from_gguf(name: str, path: str) -> ModelInfo:
    m = read_gguf_meta(path)
    arch = m.get("general.architecture")
    gtype = m.get("general.type")
    if arch is None or arch in NON_LM_ARCHS or gtype not in (None, "model") or not m.tensors:
        what = (f"general.type={gtype}" if gtype not in (None, "model") else
                f"architecture {arch}" if arch else "no general.architecture")
        if not m.tensors:
            what = "it holds no tensors"
        raise DraftwiseError(f"{path} is not a language model ({what}); give a causal LM GGUF")
    tokens = m.get("tokenizer.ggml.tokens")
    if not tokens:
        raise DraftwiseError(f"{path} has no tokenizer (tokenizer.ggml.tokens is missing); "
                             "re-convert it with its tokenizer")
    types = m.get("tokenizer.ggml.token_type")
    emb = m.tensors.get("output.weight") or m.tensors.get("token_embd.weight")

    def opt_int(key):
        v = m.get(key)
        return int(v) if v is not None else None

    add_bos = m.get("tokenizer.ggml.add_bos_token")
    return ModelInfo(
        name=name, path=path, kind="gguf", architecture=arch,
        family=m.get("general.basename") or arch, finetune=m.get("general.finetune"),
        tokenizer_model=m.get("tokenizer.ggml.model"), tokenizer_pre=m.get("tokenizer.ggml.pre"),
        n_rows=int(emb[-1]) if emb else len(tokens),
        bos_id=opt_int("tokenizer.ggml.bos_token_id"),
        eos_id=opt_int("tokenizer.ggml.eos_token_id"),
        pad_id=opt_int("tokenizer.ggml.padding_token_id"),
        add_bos=None if add_bos is None else bool(add_bos),
        chat_template=m.get("tokenizer.chat_template"),
        context_length=opt_int(f"{arch}.context_length"),
        n_params=m.n_params, file_size=Path(path).stat().st_size, tokens=list(tokens),
        token_types=[int(t) for t in types] if types is not None else
        [int(TokenType.NORMAL)] * len(tokens),
    )


def _hf_files(ref: str, kind: str) -> Path:
    """The directory holding config.json (downloaded for hub ids, config and tokenizer only)."""
    if kind == "hf_dir":
        return Path(ref)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, allow_patterns=["*.json", "*.model", "*.txt"]))
    except Exception as e:
        raise DraftwiseError(f"cannot fetch {ref} from the Hugging Face hub: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _from_hf(name: str, ref: str, kind: str) -> ModelInfo:
    d = _hf_files(ref, kind)
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise DraftwiseError(f"cannot read {d / 'config.json'}: {e}") from None
    archs = cfg.get("architectures") or []
    if not any(a.endswith(_LM_SUFFIXES) for a in archs):
        raise DraftwiseError(f"{ref} is not a causal language model (architectures: "
                             f"{', '.join(archs) or 'none'})")
    tok = _hf_tokenizer(d, ref)
    text_cfg = cfg.get("text_config") or cfg
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    types = _hf_token_types(tok, tokens)
    ids = tok("a")["input_ids"]
    n_params, size = _safetensors_size(d)
    return ModelInfo(
        name=name, path=ref, kind=kind, architecture=archs[0], family=cfg.get("model_type"),
        tokenizer_model=type(tok).__name__.removesuffix("Fast"),
        tokenizer_pre=None, n_rows=text_cfg.get("vocab_size") or len(tok),
        bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
        add_bos=bool(ids) and tok.bos_token_id is not None and ids[0] == tok.bos_token_id,
        chat_template=tok.chat_template if isinstance(tok.chat_template, str) else None,
        context_length=text_cfg.get("max_position_embeddings"), n_params=n_params,
        file_size=size, tokens=[t or "" for t in tokens], token_types=types,
    )


def _hf_tokenizer(d: Path, ref: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(d))
    except Exception as e:  # transformers raises OSError, ValueError or TypeError here
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise DraftwiseError(f"{ref} has no usable tokenizer ({first})") from None


def _hf_token_types(tok, tokens: list[str]) -> list[int]:
    types = [int(TokenType.BYTE) if t and t.startswith("<0x") and len(t) == 6 and t.endswith(">")
             else int(TokenType.NORMAL) for t in tokens]
    for i, added in tok.added_tokens_decoder.items():
        if i < len(types):
            types[i] = int(TokenType.CONTROL if added.special else TokenType.USER_DEFINED)
    return types


def _safetensors_size(d: Path) -> tuple[int | None, int | None]:
    """(parameter count, bytes) from the safetensors headers of a directory, if any are there."""
    files = sorted(d.glob("*.safetensors"))
    if not files:
        return None, None
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            (hlen,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(hlen))
        for k, v in header.items():
            if k != "__metadata__":
                count = 1
                for s in v["shape"]:
                    count *= s
                n += count
    return n, sum(f.stat().st_size for f in files)
