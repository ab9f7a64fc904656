"""Tiny random models with a real byte-level BPE tokenizer, built in a few seconds offline: Llama
in HF format (transformers) and Qwen2 as GGUF (llama.cpp)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CORPUS = [
    "def quicksort(a):\n    if len(a) <= 1:\n        return a\n    pivot = a[0]\n",
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "for i in range(10):\n    print(i * i)\n",
    "Speculative decoding drafts tokens and the target verifies them in one pass.",
] * 20


def build_tokenizer(out: Path, vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    tok.save_pretrained(out)
    return tok


def build_model(out: Path, seed: int, tok, layers: int = 2, hidden: int = 64,
                init_range: float = 0.3, base: Path | None = None, noise: float = 0.0) -> Path:
    """A random LlamaForCausalLM; with `base`, a copy of that model plus Gaussian noise."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if base is not None:
        model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float32)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn_like(p))
    else:
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=256, initializer_range=init_range,
                          eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# -- tiny GGUF models (llama.cpp) ------------------------------------------------------------


def random_qwen2(vocab: int, seed: int, layers: int = 2, hidden: int = 64) -> dict:
    """HF state dict (numpy float32) of a random Qwen2 model with peaky outputs."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, initializer_range=0.3,
                      tie_word_embeddings=False)
    return {k: v.detach().numpy().astype(np.float32)
            for k, v in Qwen2ForCausalLM(cfg).state_dict().items()}


def low_rank_noise(sd: dict, scale: float, rank: int, seed: int) -> dict:
    """sd with W + scale * U V^T / sqrt(in) on every linear layer of the blocks."""
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for k, w in sd.items():
        if k.startswith("model.layers.") and k.endswith("proj.weight"):
            u, v = rng.standard_normal((w.shape[0], rank)), rng.standard_normal((rank, w.shape[1]))
            out[k] = (w + scale * (u @ v) / np.sqrt(w.shape[1])).astype(np.float32)
    return out


def write_tiny_gguf(path: Path, tok_dir: Path, tok, sd: dict, arch: str = "qwen2",
                    qtype: str = "Q8_0") -> Path:
    """A GGUF llama.cpp loads: gpt2 BPE tokenizer (tokens, merges, types), chat template, 2-D
    weights in qtype (F32 otherwise); llama's q/k rows permuted as convert_hf_to_gguf does."""
    import gguf

    from draftwise.distill.hfmodel import permute

    q = gguf.GGMLQuantizationType[qtype]
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("model.layers."))
    hidden = sd["model.embed_tokens.weight"].shape[1]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_context_length(2048)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(sd["model.layers.0.mlp.up_proj.weight"].shape[0])
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else
                    gguf.LlamaFileType.ALL_F32)
    tj = json.loads((tok_dir / "tokenizer.json").read_text())
    inv = {i: t for t, i in tj["model"]["vocab"].items()}
    inv.update({a["id"]: a["content"] for a in tj["added_tokens"]})
    tokens = [inv[i] for i in range(len(inv))]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t == "<eos>" else gguf.TokenType.NORMAL
                       for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
    w.add_eos_token_id(tok.eos_token_id)
    w.add_bos_token_id(tok.eos_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(tok.chat_template)
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], layers)
    for k, v in sd.items():
        if arch == "llama" and k.endswith(("q_proj.weight", "k_proj.weight")):
            v = permute(v, 4, 4 if "q_proj" in k else 2)
        name = tmap.get_name(k, try_suffixes=(".weight", ".bias"))
        if v.ndim == 2 and v.shape[1] % 32 == 0 and q != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, gguf.quants.quantize(v, q), raw_dtype=q)
        else:
            w.add_tensor(name, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
