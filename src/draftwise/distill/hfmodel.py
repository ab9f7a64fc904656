"""A GGUF draft as a transformers model for training, and the HF <-> GGUF tensor names.

The weights are dequantized straight from the GGUF file (gguf.quants), so no tokenizer
conversion and no cached HF copy is needed: training works on token ids only. Supported
architectures: qwen2, qwen3, llama. Llama's q/k rows are stored permuted in GGUF
(convert_hf_to_gguf.py); `unpermute` undoes that on load and `permute` redoes it on export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from draftwise.distill.gguffile import GGUFFile
from draftwise.errors import DraftwiseError

ARCHS = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama"}
_PERMUTED = {"llama"}  # architectures whose q/k rows the GGUF converter permutes


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """HF q/k rows [out, in] -> GGUF order (convert_hf_to_gguf.py LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """GGUF q/k rows -> HF order; the inverse of `permute`."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


@dataclass(frozen=True)
class Layout:
    """How one GGUF maps to HF: names hf -> gguf (tied output heads absent), and q/k permutation."""

    arch: str
    names: dict[str, str]
    n_head: int
    n_head_kv: int

    def qk_perm(self, hf_name: str) -> tuple[int, int | None] | None:
        """(n_head, n_head_kv) for permute/unpermute when this tensor is permuted in GGUF."""
        if self.arch not in _PERMUTED or not hf_name.endswith(".weight"):
            return None
        if hf_name.endswith("self_attn.q_proj.weight"):
            return self.n_head, self.n_head
        if hf_name.endswith("self_attn.k_proj.weight"):
            return self.n_head, self.n_head_kv
        return None


def hf_config(g: GGUFFile):
    """A transformers config from the GGUF metadata (raises for unsupported architectures)."""
    import transformers

    if g.arch not in ARCHS:
        raise DraftwiseError(f"distill can train {', '.join(ARCHS)} drafts; {g.path.name} is "
                             f"{g.arch or 'of unknown architecture'}")
    if "rope_freqs.weight" in g.tensors or g.arch_key("rope.scaling.type") not in (None, "none"):
        raise DraftwiseError(f"{g.path.name} uses rope scaling, which distill does not support yet")
    if "token_embd.weight" not in g.tensors:
        raise DraftwiseError(f"{g.path.name} has no token_embd.weight tensor; not a language model")
    n_head = int(g.arch_key("attention.head_count"))
    kw = dict(
        vocab_size=int(g.tensors["token_embd.weight"].shape[1]),
        hidden_size=int(g.arch_key("embedding_length")),
        intermediate_size=int(g.arch_key("feed_forward_length")),
        num_hidden_layers=g.n_blocks,
        num_attention_heads=n_head,
        num_key_value_heads=int(g.arch_key("attention.head_count_kv", n_head)),
        max_position_embeddings=int(g.arch_key("context_length", 4096)),
        rms_norm_eps=float(g.arch_key("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(g.arch_key("rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in g.tensors,
        bos_token_id=g.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=g.get("tokenizer.ggml.eos_token_id"),
    )
    if (head_dim := g.arch_key("attention.key_length")) is not None:
        kw["head_dim"] = int(head_dim)
    if g.arch == "llama":
        kw["attention_bias"] = "blk.0.attn_q.bias" in g.tensors
    return getattr(transformers, f"{ARCHS[g.arch]}Config")(**kw)


def layout(g: GGUFFile, hf_names) -> Layout:
    """Map the HF parameter names of a model built from hf_config(g) to g's tensor names."""
    import gguf

    arch_id = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[g.arch]
    tmap = gguf.get_tensor_name_map(arch_id, g.n_blocks)
    names = {}
    for hf in hf_names:
        gn = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if gn is None:
            raise DraftwiseError(f"no GGUF tensor name for {hf} ({g.arch})")
        if gn in g.tensors:
            names[hf] = gn
        elif not (hf == "lm_head.weight" and "output.weight" not in g.tensors):
            raise DraftwiseError(f"{g.path.name} lacks tensor {gn} ({hf})")
    n_head = int(g.arch_key("attention.head_count"))
    return Layout(g.arch, names, n_head, int(g.arch_key("attention.head_count_kv", n_head)))


def load_model(g: GGUFFile):
    """(model in float32, Layout): the GGUF's weights dequantized into a transformers model."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    cfg = hf_config(g)
    with no_init_weights():  # every weight is overwritten below: skip the random init
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    lay = layout(g, model.state_dict().keys())
    sd = {}
    for hf, gn in lay.names.items():
        w = g.array(gn)
        if (perm := lay.qk_perm(hf)) is not None:
            w = unpermute(w, *perm)
        sd[hf] = torch.from_numpy(np.array(w, dtype=np.float32))  # a copy: the file is read-only
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise DraftwiseError(f"{g.path.name}: weights do not fit the {g.arch} model "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    return model, lay
