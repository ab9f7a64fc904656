"""Stage `export`: the trained draft as a GGUF file llama.cpp loads, registered under NAME.

The file is the base GGUF (the draft, or its cut with --layers) with only the trained tensors
replaced: metadata, tokenizer and chat template are copied byte for byte, and so is every tensor
training did not change. A changed tensor is quantized with the gguf package to its original type
when the package can write it (F32, F16, BF16, Q8_0, Q5_0/1, Q4_0/1), else to Q8_0 (K-quants:
Q8_0 keeps the trained weights to within 0.4% per block). With --quant (default q4_0), llama.cpp's
quantizer then makes NAME-<quant> from it, exactly as `models quantize` makes the stock variants,
so the two compare like for like.
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
    from draftwise.models.quantize import gguf_file_type, quantize

    t0 = time.perf_counter()
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
            made.append(write_gguf(base, path, tensors))
        integrity.write_record(path, integrity.sha256_file(path),
                               f"delete {run.path / 'export'} and run `draftwise distill --out "
                               f"{opts.out} --resume` to export it again")
        ft = gguf_file_type(path)
        if opts.quant and ft is not None and _ftype_quant(ft) != opts.quant:
            vpath = path.with_name(f"{opts.out}-{opts.quant}.gguf")
            made.append(vpath)
            with _quiet("draftwise.models.quantize"):
                q = quantize(str(path), opts.quant, allow_requantize=True, threads=opts.threads,
                             progress=False)
            variants[opts.quant] = q.name
        registry.register(registry.LocalModel(
            name=opts.out, file=path.name, parent=parent, target=opts.target,
            recipe=opts.recipe(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            variants=variants, options=opts.to_dict()))
    except BaseException:
        for p in made:
            p.unlink(missing_ok=True)
            integrity.forget(p)
        raise
    n_changed = sum(t.data is not None for t in tensors)
    info = {"file": str(path), "size": path.stat().st_size,
            "variants": {q: str(models_dir() / f) for q, f in variants.items()},
            "tensors_written": n_changed, "tensors_copied": len(tensors) - n_changed,
            "types": sorted({Q(t.type).name for t in tensors if t.data is not None}),
            "seconds": round(time.perf_counter() - t0, 1)}
    run.mark_done("export", info)
    note(f"exported {opts.out}: {path} ({n_changed} tensors trained, "
         f"{len(tensors) - n_changed} copied)" +
         "".join(f"; {opts.out}-{q}: {models_dir() / f}" for q, f in variants.items()))
    return info


def _ftype_quant(ft: int) -> str | None:
    import gguf

    try:
        return gguf.LlamaFileType(ft).name.removeprefix("MOSTLY_").lower()
    except ValueError:
        return None
