"""Stage `export`: the trained draft as a GGUF file llama.cpp loads, registered under NAME.

The file is the base GGUF (the draft, or its cut with --layers) with only the trained tensors
replaced: metadata, tokenizer and chat template are copied byte for byte, and so is every tensor
training did not change. A changed tensor is quantized with the gguf package to its original type
when the package can write it (F32, F16, BF16, Q8_0, Q5_0/1, Q4_0/1), else to Q8_0 (K-quants:
Q8_0 keeps the trained weights to within 0.4% per block). With --quant (default q4_0), llama.cpp's
quantizer then makes NAME-<quant> from it, exactly as `models quantize` makes the stock variants,
so the two compare like for like.

With --adapter the draft was trained at --quant itself (q4_0 weights, dequantized) and the result
is a LoRA adapter GGUF (NAME.lora.gguf: general.type adapter, per trained tensor `.lora_a`
[r, in] and `.lora_b` [out, r] in float32) that llama.cpp applies to that same file at
load: requantizing merged weights rounds most of a small LoRA update away, an adapter keeps it.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from draftwise.distill.gguffile import GGUFFile, NewTensor, gguf_size, need_space, write_gguf
from draftwise.distill.hfmodel import layout, permute
from draftwise.distill.options import DistillOptions
from draftwise.distill.rundir import RunDir, read_json
from draftwise.errors import DraftwiseError
from draftwise.files import atomic_path
from draftwise.models import integrity, registry
from draftwise.models.store import models_dir

Q = GGMLQuantizationType
WRITABLE = {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q5_0, Q.Q5_1, Q.Q4_0, Q.Q4_1}


def out_type(orig: int, n_cols: int) -> Q:
    """The type a trained tensor is written in: its own if the gguf package can quantize it,
    else Q8_0; F16 when the rows do not split into whole blocks."""
    t = Q(orig) if Q(orig) in WRITABLE else Q.Q8_0
    if n_cols % GGML_QUANT_SIZES[t][0]:
        t = Q.F16
    return t


def encode(w: np.ndarray, t: Q) -> np.ndarray:
    """w [..., cols] float32 -> raw bytes of type t (uint8 or float array)."""
    from gguf.quants import quantize

    return quantize(np.ascontiguousarray(w, dtype=np.float32), t)


def trained_tensors(base: GGUFFile, sd: dict, changed: set[str]) -> list[NewTensor]:
    """Every tensor of base in file order: the changed ones encoded from sd (HF names, torch),
    the others copied from the file."""
    lay = layout(base, sd.keys())
    by_gguf = {gn: hf for hf, gn in lay.names.items() if hf in changed}
    out = []
    for name, t in base.tensors.items():
        hf = by_gguf.get(name)
        if hf is None:
            out.append(NewTensor(name, t.shape, t.type, src=name))
            continue
        w = sd[hf].detach().float().cpu().numpy()
        if (perm := lay.qk_perm(hf)) is not None:
            w = permute(w, *perm)
        if tuple(reversed(w.shape)) != t.shape:
            raise DraftwiseError(f"trained {hf} has shape {w.shape}, the file's {name} "
                                 f"{tuple(reversed(t.shape))}")
        typ = out_type(t.type, t.shape[0])
        out.append(NewTensor(name, t.shape, int(typ), data=encode(w, typ)))
    return out


def lora_tensors(run: RunDir, base: GGUFFile) -> tuple[list[tuple[str, np.ndarray]], float]:
    """The trained LoRA in llama.cpp's adapter layout, (GGUF name + `.lora_a` / `.lora_b`, float32
    array) in the base file's tensor order, and the alpha to write. llama.cpp scales B A by
    alpha / r, one more graph node per layer unless that is 1: B comes scaled, alpha = r."""
    from safetensors.numpy import load_file

    train = run.path / "train"
    cfg = read_json(train / "adapter.json")
    scale = cfg["lora_alpha"] / cfg["r"]
    sd = load_file(str(train / "adapter.safetensors"))
    hf = {k.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight"): k
          for k in sd if ".lora_A." in k}
    lay = layout(base, hf)
    by_gguf = {gn: name for name, gn in lay.names.items()}
    out = []
    for gn in base.tensors:
        if (name := by_gguf.get(gn)) is None:
            continue
        a, b = sd[hf[name]], sd[hf[name].replace(".lora_A.", ".lora_B.")]
        if (perm := lay.qk_perm(name)) is not None:  # B's rows are the permuted output rows
            b = permute(b, *perm)
        out += [(f"{gn}.lora_a", np.ascontiguousarray(a, np.float32)),
                (f"{gn}.lora_b", np.ascontiguousarray(b * scale, np.float32))]
    return out, float(cfg["r"])


def write_adapter(path: Path, arch: str, alpha: float,
                  tensors: list[tuple[str, np.ndarray]]) -> Path:
    """A LoRA adapter GGUF as llama.cpp's llama_adapter_lora_init reads it (atomically)."""
    import gguf

    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_type("adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", alpha)
        for name, a in tensors:
            w.add_tensor(name, a)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


@contextmanager
def _quiet(name: str):
    """Silence one logger (quantize's note that the input is already quantized: expected here)."""
    lg = logging.getLogger(name)
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def export_path(name: str) -> Path:
    return models_dir() / f"{name}.gguf"


def run_export(run: RunDir, opts: DistillOptions, base: GGUFFile, parent: str,
               note=print) -> dict:
    """Write models/NAME.gguf (+ NAME-<quant>.gguf), register NAME; returns export/done.json.
    On any failure the files this stage wrote are removed and nothing is registered."""
    if run.is_done("export"):
        return read_json(run.done("export"))
    from draftwise.distill.train import trained_weights
    from draftwise.models.quantize import file_quant, quantize

    t0 = time.perf_counter()
    if opts.adapter:
        path = models_dir() / f"{opts.out}.lora.gguf"
        lora, alpha = lora_tensors(run, base)
        need_space(path.parent, sum(a.nbytes for _, a in lora) + (1 << 20),
                   f"exporting {opts.out}")
    else:
        sd, changed = trained_weights(run, base, opts)
        tensors = trained_tensors(base, sd, changed)
        del sd
        path = export_path(opts.out)
        size = gguf_size(base, tensors)
        # the quantized variant is smaller than this file: room for two copies covers both
        need_space(path.parent, size * (2 if opts.quant else 1), f"exporting {opts.out}")
    for stale in path.parent.glob(f"{path.name}.*.partial"):  # a killed export's leftovers
        stale.unlink(missing_ok=True)
    made: list[Path] = []
    variants: dict[str, str] = {}
    try:
        with integrity.model_lock(path):
            made.append(write_adapter(path, base.arch, alpha, lora) if opts.adapter
                        else write_gguf(base, path, tensors))
        integrity.write_record(path, integrity.sha256_file(path),
                               f"delete {run.path / 'export'} and run `draftwise distill --out "
                               f"{opts.out} --resume` to export it again")
        if opts.quant and not opts.adapter and file_quant(path) not in (None, opts.quant):
            vpath = path.with_name(f"{opts.out}-{opts.quant}.gguf")
            made.append(vpath)
            with _quiet("draftwise.models.quantize"):
                q = quantize(str(path), opts.quant, allow_requantize=True, threads=opts.threads,
                             progress=False)
            variants[opts.quant] = q.name
        file = path.name
        if opts.adapter:  # its file is its base: by name in the models directory, else by path
            file = base.path.name if base.path.parent == models_dir() else str(base.path)
        registry.register(registry.LocalModel(
            name=opts.out, file=file, parent=parent, target=opts.target,
            recipe=opts.recipe(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            variants=variants, options=opts.to_dict(),
            adapter=path.name if opts.adapter else None))
    except BaseException:
        for p in made:
            p.unlink(missing_ok=True)
            integrity.forget(p)
        raise
    info = {"file": str(path), "size": path.stat().st_size,
            "variants": {q: str(models_dir() / f) for q, f in variants.items()},
            "seconds": round(time.perf_counter() - t0, 1)}
    if opts.adapter:
        info.update(adapter=str(path), base=str(base.path), tensors_written=len(lora) // 2)
        note(f"exported {opts.out}: LoRA adapter {path} ({len(lora) // 2} tensors) on "
             f"{base.path}")
    else:
        n_changed = sum(t.data is not None for t in tensors)
        info.update(tensors_written=n_changed, tensors_copied=len(tensors) - n_changed,
                    types=sorted({Q(t.type).name for t in tensors if t.data is not None}))
        note(f"exported {opts.out}: {path} ({n_changed} tensors trained, "
             f"{len(tensors) - n_changed} copied)" +
             "".join(f"; {opts.out}-{q}: {models_dir() / f}" for q, f in variants.items()))
    run.mark_done("export", info)
    return info

