"""Time one distill training step (forward, loss, backward, AdamW) of a GGUF draft per precision.

python benchmarks/distill_step_time.py qwen2.5-coder-0.5b --seq 256 --cont 128 --reps 3 \
    [--threads N]

Precisions: fp32 (float32 weights and math), autocast (float32 weights, bfloat16 matmuls through
torch.autocast: every frozen weight is cast each step), bf16 (bfloat16 frozen weights, float32
LoRA adapters, autocast; what `distill --dtype bfloat16` does). Prints the best and median seconds
per step of each, interleaved so that machine load hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from draftwise.distill.gguffile import read_gguf
from draftwise.distill.hfmodel import load_model
from draftwise.distill.train import Batch, make_trainable, step_loss
from draftwise.models.catalog import resolve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    ap.add_argument("--cont", type=int, default=128, help="positions with a loss")
    ap.add_argument("--topk", type=int, default=32)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "autocast", "bf16"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    g = read_gguf(resolve(a.model).ref)
    gen = torch.Generator().manual_seed(0)
    V = g.tensors["token_embd.weight"].shape[1]
    ids = torch.randint(0, 1000, (a.seq,), generator=gen).tolist()
    idx = torch.randint(0, V, (a.cont, a.topk), generator=gen)
    logp = torch.log_softmax(torch.randn(a.cont, a.topk + 1, generator=gen), -1)
    batch = Batch(ids=ids, n_cont=a.cont, idx=idx, logp=logp[:, :-1], rest=logp[:, -1].exp())
    runs = {}
    for prec in a.precisions:
        model, _ = load_model(g)
        model = make_trainable(model, a.rank, a.full, bf16_base=prec == "bf16")
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        runs[prec] = (model, opt)
    times = {p: [] for p in runs}
    for rep in range(a.reps + 1):
        for prec, (model, opt) in runs.items():
            t0 = time.perf_counter()
            loss = step_loss(model, batch, "fkl", autocast=prec in ("autocast", "bf16"))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if rep:  # the first step warms up kernels
                times[prec].append(time.perf_counter() - t0)
    for prec, ts in times.items():
        best, med = min(ts), statistics.median(ts)
        print(f"{prec:9s} best {best:6.2f} s/step ({a.seq / best:6.1f} tok/s), median {med:6.2f} "
              f"(steps: {', '.join(f'{t:.2f}' for t in ts)})")


if __name__ == "__main__":
    main()
