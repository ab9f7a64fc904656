"""Stage `train`: fit the draft to the target's scored distributions (transformers + peft, CPU).

LoRA on every linear layer of the blocks (peft's "all-linear": attention q/k/v/o and the MLP;
not the output head), or `--full` fine-tuning. One optimizer step sees `batch_seqs` sequences;
the loss is the divergence (losses.py) averaged over their continuation positions. A fraction
of the prompts is kept out to validate after every epoch (early stopping, best weights kept).
Precision: float32 master weights; with bfloat16 the matmuls run under torch.autocast (see
README: on the development CPU, with AMX, a step takes 2-3x less time than in float32).

Checkpoints (train/ckpt.pt: trainable weights, optimizer, step, losses) are written every
CKPT_SECONDS and when the run is stopped (Ctrl-C, SIGTERM), always to a temporary file renamed
into place: a killed run resumes from the last one. The result is train/adapter.safetensors +
adapter.json (LoRA) or train/weights.safetensors (full).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from draftwise.distill.data import Example
from draftwise.distill.losses import bins, divergence
from draftwise.distill.options import LORA_MODULES, DistillOptions
from draftwise.distill.rundir import RunDir, read_json
from draftwise.distill.topk import Scores
from draftwise.errors import DraftwiseError
from draftwise.files import atomic_path, write_json

CKPT_SECONDS = 120.0
WARMUP = 0.06  # fraction of the steps with a linear learning-rate warm-up


@dataclass
class Batch:
    """One sequence: ids [P + L - 1] (prompt + continuation but its last token), n_cont = L
    positions with a loss, and the target's top-k there: idx [L, k], logp [L, k], rest [L]."""

    ids: list[int]
    n_cont: int
    idx: object
    logp: object
    rest: object


def make_batches(examples: list[Example], scores: dict[int, Scores]) -> list[Batch]:
    import torch

    out = []
    for e in examples:
        s = scores[e.seq]
        out.append(Batch(e.prompt + e.cont[:-1], len(e.cont),
                         torch.from_numpy(s.idx.astype(np.int64)),
                         torch.from_numpy(s.logp.astype(np.float32)),
                         torch.from_numpy(s.rest.astype(np.float32))))
    return out


def precision(dtype: str) -> str:
    """'float32' or 'bfloat16' for dtype auto|float32|bfloat16: auto takes bfloat16 where the CPU
    has native bf16 matrix instructions (AMX or AVX512-BF16), where it measured faster."""
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "float32"
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


def make_trainable(model, rank: int, full: bool, bf16_base: bool = False,
                   modules: tuple[str, ...] = LORA_MODULES):
    """Full fine-tuning: every parameter trains (float32 master weights). Else a peft LoRA model
    (rank, alpha 2 x rank) on the blocks' linear layers named in modules; bf16_base stores the
    frozen weights in bfloat16 (the adapters stay float32), so autocast need not cast them every
    step."""
    if full:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    import torch
    from peft import LoraConfig, get_peft_model

    if bf16_base:
        model.to(torch.bfloat16)  # before peft: its adapters are then made in float32
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(modules),
                     bias="none")
    model = get_peft_model(model, cfg)
    if bf16_base:  # peft would cast every bf16 activation to the adapters' float32 and back;
        for m in model.modules():  # autocast runs the adapters' matmuls in bf16 anyway
            if hasattr(m, "cast_input_dtype_enabled"):
                m.cast_input_dtype_enabled = False
    return model


def step_loss(model, b: Batch, loss: str, autocast: bool, device: str = "cpu",
              prompt_grad: bool = True):
    """Sum over b's positions of the divergence (a scalar tensor with a graph).
    prompt_grad False: the positions before the first one with a loss (the prompt but its last
    token) run once without gradients and are attended to as a cache; the gradient then comes
    only from the continuation's own positions, and the prompt costs a forward, no backward."""
    import torch

    ids = torch.tensor([b.ids], device=device)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # LoRA inside
    n_pre = 0 if prompt_grad else len(b.ids) - b.n_cont
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
        cache = None
        if n_pre > 0:
            from transformers import DynamicCache

            cache = DynamicCache(config=lm.config)  # filled in place by the forward below
            with torch.no_grad():
                # positional: the cache's keyword is renamed within transformers 5.x
                lm.model(ids[:, :n_pre], None, None, cache, use_cache=True)
        hidden = lm.model(ids[:, n_pre:], None, None, cache,
                          use_cache=cache is not None).last_hidden_state
        # the head on 2-D rows: a 3-D input makes its backward copy the [V, H] weight each time
        logits = lm.lm_head(hidden[0, -b.n_cont:])
    logits = logits.float()
    log_p, log_q = bins(logits, b.idx.to(device), b.logp.to(device), b.rest.to(device))
    return divergence(loss, log_p, log_q).sum()


def validation_split(examples: list[Example], fraction: float,
                     seed: int) -> tuple[list[Example], list[Example]]:
    """(training, validation): floor(fraction x prompts) whole prompts, drawn with the seed, go to
    validation, so that it measures prompts training never saw (none with under 1/fraction)."""
    ids = sorted({e.prompt_id for e in examples})
    n_val = int(fraction * len(ids) + 1e-9)
    val = set(np.random.default_rng(seed).choice(ids, n_val, replace=False).tolist()
              if n_val else ())
    return ([e for e in examples if e.prompt_id not in val],
            [e for e in examples if e.prompt_id in val])


def val_loss(model, batches: list[Batch], loss: str, autocast: bool, device: str) -> float:
    """The divergence per position over batches, without gradients."""
    import torch

    with torch.no_grad():
        total = sum(float(step_loss(model, b, loss, autocast, device, prompt_grad=False))
                    for b in batches)
    return total / max(1, sum(b.n_cont for b in batches))


def plan(n: int, opts: DistillOptions) -> list[list[int]]:
    """The sequences of each optimizer step: epochs of seeded shuffles, cut into batches."""
    per_epoch = -(-n // opts.batch_seqs)
    total = opts.steps or opts.epochs * per_epoch
    steps: list[list[int]] = []
    epoch = 0
    while len(steps) < total:
        order = np.random.default_rng(opts.seed * 7919 + epoch).permutation(n).tolist()
        for s in range(0, n, opts.batch_seqs):
            if len(steps) < total:
                steps.append(order[s:s + opts.batch_seqs])
        epoch += 1
    return steps


def lr_factor(step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    warm = max(1, round(WARMUP * total))
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


@contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C or SIGTERM (checked between steps); a second Ctrl-C
    interrupts at once (the last checkpoint on disk is still whole)."""
    ev = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield ev
        return

    def handler(signum, frame):
        if ev.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        ev.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield ev
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_ckpt(path, model, opt, step: int, log: dict) -> None:
    """log: losses, tokens, seconds, val_start and val (validation loss before training and per
    epoch), best (loss, step, state) or None."""
    import torch

    state = {"step": step, "trainable": trainable_state(model), "optim": opt.state_dict(), **log}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def run_train(run: RunDir, opts: DistillOptions, base, examples: list[Example],
              scores: dict[int, Scores], progress=None,
              stop: threading.Event | None = None) -> dict:
    """Train, checkpointing as it goes; write the result and train/done.json (returned).
    base: the draft's GGUFFile. With validation prompts (opts.val_fraction) the loss on them is
    measured before training and after every epoch; training stops at the first epoch whose loss
    is above the epoch's before, and the result is the weights of the lowest loss (the untrained
    ones if no epoch beat them).
    Raises KeyboardInterrupt after checkpointing when stopped."""
    import torch

    if run.is_done("train"):
        return read_json(run.done("train"))
    from draftwise.distill.hfmodel import load_model

    out = run.stage("train")
    prec = precision(opts.dtype)
    autocast = prec == "bfloat16"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    model, _ = load_model(base)
    model = make_trainable(model, opts.lora_rank, opts.full, bf16_base=autocast,
                           modules=opts.lora_modules).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)
    train_ex, val_ex = validation_split(examples, opts.val_fraction, opts.seed)
    batches, val_batches = make_batches(train_ex, scores), make_batches(val_ex, scores)
    steps = plan(len(batches), opts)
    per_epoch = -(-len(batches) // opts.batch_seqs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, len(steps)))
    ckpt = out / "ckpt.pt"
    start = 0
    log = {"losses": [], "tokens": 0, "seconds": 0.0, "val_start": None, "val": [], "best": None}
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device)
        missing = set(state["trainable"]) - {n for n, p in model.named_parameters()
                                             if p.requires_grad}
        if missing:
            raise DraftwiseError(f"{ckpt} does not fit this model (e.g. {sorted(missing)[0]}); "
                                 "delete it to train from the start")
        model.load_state_dict(state["trainable"], strict=False)
        opt.load_state_dict(state["optim"])
        start = state["step"]
        log = {k: state.get(k, v) for k, v in log.items()}
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, len(steps)),
                                                  last_epoch=start - 1)
    if val_batches and start == 0:  # before training: the draft as it is may stay the best
        v = val_loss(model, val_batches, opts.loss, autocast, device)
        log["val_start"] = round(v, 6)
        log["best"] = {"loss": v, "step": 0, "state": trainable_state(model)}
    losses, best = log["losses"], log["best"]
    task = progress.add_task("train", total=len(steps), completed=start,
                             info="") if progress else None
    stop = stop or threading.Event()
    t_ckpt = time.perf_counter()
    ema = losses[-1] if losses else None
    done, early = start, False
    for step in range(start, len(steps)):
        if stop.is_set():
            break
        t0 = time.perf_counter()
        group = [batches[i] for i in steps[step]]
        n_pos = sum(b.n_cont for b in group)
        total = 0.0
        for b in group:  # one backward per sequence: no padding, memory of one sequence
            loss = step_loss(model, b, opts.loss, autocast, device, opts.prompt_grad) / n_pos
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        log["seconds"] += time.perf_counter() - t0
        log["tokens"] += sum(len(b.ids) for b in group)
        losses.append(total)
        done = step + 1
        ema = total if ema is None else 0.9 * ema + 0.1 * total
        if val_batches and (done % per_epoch == 0 or done == len(steps)):
            v = val_loss(model, val_batches, opts.loss, autocast, device)
            # rising from the epoch before: fitting the training prompts at the others' expense
            # (the first epoch may rise above the untrained draft while the rate warms up)
            early = bool(log["val"]) and v > log["val"][-1]
            log["val"].append(round(v, 6))
            if best is None or v < best["loss"]:
                best = log["best"] = {"loss": v, "step": done, "state": trainable_state(model)}
        if progress:
            val = f"  val {log['val'][-1]:.4f}" if log["val"] else ""
            progress.update(task, advance=1, info=f"loss {ema:.4f}{val}  "
                            f"{log['tokens'] / max(log['seconds'], 1e-9):.0f} tok/s")
        if early:
            break
        if time.perf_counter() - t_ckpt > CKPT_SECONDS:
            save_ckpt(ckpt, model, opt, done, log)
            t_ckpt = time.perf_counter()
    if done < len(steps) and not early:  # stopped: keep what was learned, then give up the run
        save_ckpt(ckpt, model, opt, done, log)
        raise KeyboardInterrupt
    if best is not None:
        model.load_state_dict(best["state"], strict=False)
    _save_result(out, model, opts)
    n = max(1, len(losses) // 10)
    info = {"steps": len(steps), "steps_run": done, "sequences": len(batches),
            "val_sequences": len(val_batches), "val_start": log["val_start"],
            "val_losses": log["val"],
            "best_step": best["step"] if best else done, "early_stop": early,
            "precision": prec, "device": device,
            "loss_first": float(np.mean(losses[:n])), "loss_last": float(np.mean(losses[-n:])),
            "losses": [round(x, 6) for x in losses], "tokens": log["tokens"],
            "seconds": round(log["seconds"], 1),
            "tok_s": round(log["tokens"] / max(log["seconds"], 1e-9), 1)}
    run.mark_done("train", info)
    ckpt.unlink(missing_ok=True)
    return info


def _save_result(out, model, opts: DistillOptions) -> None:
    from safetensors.torch import save_file

    if opts.full:
        sd = {n: p.detach().float().cpu().contiguous() for n, p in model.named_parameters()}
        with atomic_path(out / "weights.safetensors") as tmp:
            save_file(sd, str(tmp))
        return
    from peft import get_peft_model_state_dict

    sd = {k: v.detach().float().cpu().contiguous()
          for k, v in get_peft_model_state_dict(model).items()}
    with atomic_path(out / "adapter.safetensors") as tmp:
        save_file(sd, str(tmp))
    write_json(out / "adapter.json", {"r": opts.lora_rank, "lora_alpha": 2 * opts.lora_rank,
                                      "target_modules": sorted(model.peft_config["default"]
                                                               .target_modules)})


def trained_weights(run: RunDir, base, opts: DistillOptions) -> tuple[dict, set[str]]:
    """(HF state dict in float32 with the training applied, names of the tensors it changed)."""
    import torch
    from safetensors.torch import load_file

    from draftwise.distill.hfmodel import load_model

    out = run.path / "train"
    model, _ = load_model(base)
    if opts.full:
        trained = load_file(str(out / "weights.safetensors"))
        base_sd = model.state_dict()
        changed = {n for n, w in trained.items() if n in base_sd and not torch.equal(w, base_sd[n])}
        model.load_state_dict(trained, strict=False)
        return {n: t.detach() for n, t in model.state_dict().items()}, changed
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    cfg = read_json(out / "adapter.json")
    adapter = load_file(str(out / "adapter.safetensors"))
    pm = get_peft_model(model, LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"],
                                          lora_dropout=0.0, target_modules=cfg["target_modules"],
                                          bias="none"))
    set_peft_model_state_dict(pm, adapter)
    merged = pm.merge_and_unload()
    changed = set()
    for k in adapter:
        mod = k.removeprefix("base_model.model.").split(".lora_A")[0].split(".lora_B")[0]
        changed.add(f"{mod}.weight")
    return {n: t.detach() for n, t in merged.state_dict().items()}, changed
