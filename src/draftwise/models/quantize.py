"""Re-encoding a GGUF model to another quantization with llama.cpp (`models quantize`).

Policy on requantizing: every catalog file is already Q4_K_M, so for a catalog base the
re-encode is always allowed (`models quantize qwen2.5-coder-1.5b --to q8_0` works as
written) and a warning saying what the result is worth is logged. For a GGUF path that is
already quantized, allow_requantize=True (`--allow-requantize`) is required.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from draftwise.backends.llamacpp import load_llama_cpp
from draftwise.errors import DraftwiseError
from draftwise.models import catalog, integrity, registry
from draftwise.models.store import models_dir
from draftwise.pairing.ggufmeta import read_gguf_meta

log = logging.getLogger(__name__)

QUANT_NOTE = ("Q8_0 made from the Q4_K_M file costs what an 8-bit target costs, "
              "but carries only the Q4_K_M accuracy.")

# quant name -> (llama_cpp LLAMA_FTYPE_* constant, nominal bits per weight)
FTYPES = {
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 8),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", 6),
    "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 5),
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 4),
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 4),
    "q3_k_m": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", 3),
    "q2_k": ("LLAMA_FTYPE_MOSTLY_Q2_K", 2),
}
_UNQUANTIZED = {0, 1, 32}  # general.file_type of F32, F16, BF16
_TENSOR_LINE = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]")  # llama.cpp's "[  12/ 290] blk.0..." lines


def gguf_file_type(path: Path) -> int | None:
    """general.file_type from a GGUF header (llama_ftype number), or None if absent."""
    ft = read_gguf_meta(path).get("general.file_type")
    return None if ft is None else int(ft)


def file_quant(path: Path) -> str | None:
    """The quantization a GGUF file says it is (`q4_0`, `q8_0`, ...), or None if it says none."""
    import gguf

    ft = gguf_file_type(path)
    try:
        return None if ft is None else gguf.LlamaFileType(ft).name.removeprefix("MOSTLY_").lower()
    except ValueError:
        return None


def requantize_note(src_quant: str, quant: str) -> str:
    """What re-encoding an already-quantized `src_quant` file to `quant` is worth."""
    s, q = src_quant.upper(), quant.upper()
    bits = FTYPES[quant][1]
    if bits > FTYPES.get(src_quant, (None, 16))[1]:
        art = "an" if bits == 8 else "a"
        return (f"{q} made from the {s} file costs what {art} {bits}-bit target costs, "
                f"but carries only the {s} accuracy.")
    return (f"{q} made from the {s} file adds {q} rounding error on top of {s}'s; "
            "quantizing from an F16 file would be more accurate.")


def _ftype_name(ft: int) -> str:
    import gguf

    try:
        return gguf.LlamaFileType(ft).name.removeprefix("MOSTLY_").lower()
    except ValueError:
        return f"ftype {ft}"


def quantize(base: str, quant: str, allow_requantize: bool = False, threads: int | None = None,
             src: Path | None = None, progress: bool = True) -> Path:
    """Re-encode `base` (a catalog name or a GGUF path) to `quant`; return the output path.

    Output: catalog.variant_path(base, quant) for a catalog name, else
    models_dir()/<stem>-<quant>.gguf. An existing output is returned as is. `src` overrides
    the input file (the output name still comes from `base`). threads=None uses all cores.
    progress: a progress bar on stderr (llama.cpp's per-tensor log only with DRAFTWISE_VERBOSE).
    """
    if quant not in FTYPES:
        raise DraftwiseError(f"unknown quantization {quant!r}; choose one of {', '.join(FTYPES)}")
    in_catalog = base in catalog.catalog()
    local = None
    if in_catalog:
        e = catalog.entry(base)
        inp, out = Path(src) if src else e.path, catalog.variant_path(base, quant)
        if src is None and not inp.is_file():
            raise DraftwiseError(f"model {base} is not downloaded; run `draftwise models pull {base}`")
    elif (local := registry.get(base)) is not None:  # made here (`distill`): NAME-QUANT
        if local.adapter:
            raise DraftwiseError(f"{base} is a LoRA adapter on {local.file}, trained at that "
                                 "quantization; it has no weights of its own to quantize")
        inp, out = Path(src) if src else local.path, models_dir() / f"{local.path.stem}-{quant}.gguf"
        allow_requantize = True  # a local model exists to be quantized
    else:
        p = Path(base).expanduser()
        if p.suffix != ".gguf" or not p.is_file():
            raise DraftwiseError(f"{base!r} is neither a catalog name (`draftwise models list`) "
                                 "nor an existing .gguf file")
        inp, out = Path(src) if src else p, models_dir() / f"{p.stem}-{quant}.gguf"
    if not inp.is_file():
        raise DraftwiseError(f"{inp} does not exist")
    fix = f"run `draftwise models quantize {base} --to {quant}` to make it again"
    with integrity.model_lock(out):
        if not _usable(out):
            _quantize_checked(base, inp, out, quant, threads, in_catalog, allow_requantize,
                              progress)
            integrity.write_record(out, integrity.sha256_file(out), fix)
    if local is not None and local.variants.get(quant) != out.name:
        registry.register(replace(local, variants={**local.variants, quant: out.name}))
    return out


def _usable(out: Path) -> bool:
    """An existing output that passes its integrity check; a damaged one is removed."""
    if not out.is_file():
        return False
    try:
        integrity.check(out)
        return True
    except integrity.CorruptModel as err:  # a damaged output is made again
        log.warning("%s is corrupt (%s); making it again", out, err.why)
        out.unlink()
        return False


def _quantize_checked(base: str, inp: Path, out: Path, quant: str, threads: int | None,
                      in_catalog: bool, allow_requantize: bool, progress: bool) -> None:
    ft = gguf_file_type(inp)
    if ft is not None and ft not in _UNQUANTIZED:
        src_quant = _ftype_name(ft)
        if src_quant == quant:
            raise DraftwiseError(f"{base} is already {quant.upper()}; use it as is")
        note = requantize_note(src_quant, quant)
        if not (in_catalog or allow_requantize):
            raise DraftwiseError(f"{inp.name} is already quantized ({src_quant.upper()}) and "
                                 f"llama.cpp re-encodes it only on request: {note} "
                                 "Pass --allow-requantize to do it anyway.")
        log.warning("%s is already %s: %s", base, src_quant.upper(), note)
    _run(inp, out, quant, threads, in_catalog or allow_requantize, progress)


@contextmanager
def _tensor_progress(llama_cpp, label: str, show: bool):
    """Route llama.cpp's log through a rich bar fed by its "[ i/ n]" tensor lines while
    quantizing; the log itself goes to stderr only with DRAFTWISE_VERBOSE (errors always)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    verbose = bool(os.environ.get("DRAFTWISE_VERBOSE"))
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=Console(stderr=True), transient=True, disable=not show or verbose)
    task = bar.add_task(label, total=None)

    @llama_cpp.llama_log_callback
    def on_log(level, text, user_data):
        m = _TENSOR_LINE.search(text or b"")
        if m:
            bar.update(task, completed=int(m[1]), total=int(m[2]))
        if verbose or level == 4:  # GGML_LOG_LEVEL_ERROR
            sys.stderr.write((text or b"").decode("utf-8", "replace"))

    llama_cpp.llama_log_set(on_log, None)
    try:
        with bar:
            yield
    finally:  # back to the backend's handler (silent unless verbose)
        load_llama_cpp()


def _run(inp: Path, out: Path, quant: str, threads: int | None, allow_requantize: bool,
         progress: bool) -> None:
    llama_cpp = load_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[quant][0])
    params.allow_requantize = allow_requantize
    params.nthread = threads or 0  # 0: llama.cpp uses all hardware threads
    tmp = out.with_name(f"{out.name}.{os.getpid()}.partial")
    try:
        with _tensor_progress(llama_cpp, f"quantize {inp.name} -> {quant}", progress):
            rc = llama_cpp.llama_model_quantize(str(inp).encode(), str(tmp).encode(),
                                                llama_cpp.byref(params))
        if rc != 0:
            raise DraftwiseError(f"llama.cpp failed to quantize {inp.name} to {quant} "
                                 f"(return code {rc}); run again with DRAFTWISE_VERBOSE=1 to see its log")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
