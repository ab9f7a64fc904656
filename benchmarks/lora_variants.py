"""Variants of one trained distill LoRA, without training again: fewer modules, or a lower rank.

    python benchmarks/lora_variants.py RUN NEW [--rank R] [--modules q_proj,k_proj,...]
    draftwise distill --out NEW --resume        # exports and evaluates the variant

Copies RUN's gen, score and evaluation continuations (<cache>/distill/RUN) into a new run NEW
whose train/ holds RUN's adapter cut to the given modules and/or truncated to rank R by the
SVD of each B @ A (the best rank-R approximation of each module's update, same scale), so the
resumed run only exports and evaluates it: which modules and how much rank the gain needs, and
(benchmarks/adapter_step_cost.py) what each costs llama.cpp.
"""

from __future__ import annotations

import argparse
import shutil

import torch
from safetensors.torch import load_file, save_file

from draftwise.distill.options import lora_module_names
from draftwise.distill.rundir import RunDir, read_json
from draftwise.files import write_json


def truncate(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                    float]:
    """A [r, in], B [out, r] -> A' [rank, in], B' [out, rank] with B'A' the best rank-`rank`
    approximation of BA, and the share of BA's squared norm kept."""
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    root = s[:rank].sqrt()
    kept = float((s[:rank] ** 2).sum() / (s ** 2).sum())
    return ((root[:, None] * (vh[:rank] @ qa.T)).float().contiguous(),
            ((qb @ u[:, :rank]) * root).float().contiguous(), kept)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("new")
    ap.add_argument("--rank", type=int)
    ap.add_argument("--modules", help="comma-separated modules or groups (attn, mlp) to keep "
                    "(default: all)")
    o = ap.parse_args()
    src, dst = RunDir.for_name(o.run), RunDir.for_name(o.new)
    if dst.path.exists():
        raise SystemExit(f"{dst.path} exists; pick another name")
    cfg = read_json(src.path / "train" / "adapter.json")
    sd = load_file(str(src.path / "train" / "adapter.safetensors"))
    keep = lora_module_names(tuple(o.modules.split(","))) if o.modules else cfg["target_modules"]
    rank = o.rank or cfg["r"]
    out, kept = {}, []
    for k in sd:
        if ".lora_A." not in k or not any(f".{m}." in k for m in keep):
            continue
        kb = k.replace(".lora_A.", ".lora_B.")
        if rank < cfg["r"]:
            out[k], out[kb], share = truncate(sd[k], sd[kb], rank)
        else:
            out[k], out[kb], share = sd[k], sd[kb], 1.0
        kept.append(share)
    for stage in ("gen", "score"):
        shutil.copytree(src.path / stage, dst.path / stage)
    if (src.path / "eval" / "conts").is_dir():
        shutil.copytree(src.path / "eval" / "conts", dst.path / "eval" / "conts")
    (dst.path / "train").mkdir()
    shutil.copy(src.path / "train" / "done.json", dst.path / "train")
    save_file(out, str(dst.path / "train" / "adapter.safetensors"))
    alpha = rank * cfg["lora_alpha"] / cfg["r"]  # the same scale alpha / r as B'A' was made for
    write_json(dst.path / "train" / "adapter.json",
               {**cfg, "r": rank, "lora_alpha": alpha, "target_modules": sorted(keep)})
    opts = read_json(src.options_file)
    opts.update(out=o.new, lora_rank=rank, lora_modules=keep)
    write_json(dst.options_file, opts)
    print(f"{dst.path}: {len(out) // 2} modules at rank {rank}, "
          f"{100 * sum(kept) / len(kept):.1f}% of the update's squared norm kept (mean)")


if __name__ == "__main__":
    main()
