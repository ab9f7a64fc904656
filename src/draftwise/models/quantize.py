"""Re-encoding a GGUF model to another quantization with llama.cpp (`models quantize`).

Policy on requantizing: every catalog file is already Q4_K_M, so for a catalog base the
re-encode is always allowed (`models quantize qwen2.5-coder-1.5b --to q8_0` works as
written) and a warning saying what the result is worth is logged. For a GGUF path that is
already quantized, allow_requantize=True (`--allow-requantize`) is required.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

from draftwise.errors import DraftwiseError
from draftwise.models import catalog
from draftwise.models.store import models_dir

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
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}


def gguf_file_type(path: Path) -> int | None:
    """general.file_type from a GGUF header (llama_ftype number), or None if absent."""
    with open(path, "rb") as f:
        def read(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

        def read_str():
            return f.read(read("Q"))

        if f.read(4) != b"GGUF":
            raise DraftwiseError(f"{path} is not a GGUF file")
        read("I"), read("Q")  # version, tensor count
        for _ in range(read("Q")):
            key, vtype = read_str(), read("I")
            if key == b"general.file_type" and vtype in _SCALAR:
                return int(read(_SCALAR[vtype]))
            if vtype == 8:
                read_str()
            elif vtype == 9:
                etype, count = read("I"), read("Q")
                if etype == 8:
                    for _ in range(count):
                        read_str()
                else:
                    f.seek(count * struct.calcsize(_SCALAR[etype]), os.SEEK_CUR)
            else:
                read(_SCALAR[vtype])
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
             src: Path | None = None) -> Path:
    """Re-encode `base` (a catalog name or a GGUF path) to `quant`; return the output path.

    Output: catalog.variant_path(base, quant) for a catalog name, else
    models_dir()/<stem>-<quant>.gguf. An existing output is returned as is. `src` overrides
    the input file (the output name still comes from `base`). threads=None uses all cores.
    """
    if quant not in FTYPES:
        raise DraftwiseError(f"unknown quantization {quant!r}; choose one of {', '.join(FTYPES)}")
    in_catalog = base in catalog.catalog()
    if in_catalog:
        e = catalog.entry(base)
        inp, out = Path(src) if src else e.path, catalog.variant_path(base, quant)
        if src is None and not inp.is_file():
            raise DraftwiseError(f"model {base} is not downloaded; run `draftwise models pull {base}`")
    else:
        p = Path(base).expanduser()
        if p.suffix != ".gguf" or not p.is_file():
            raise DraftwiseError(f"{base!r} is neither a catalog name (`draftwise models list`) "
                                 "nor an existing .gguf file")
        inp, out = Path(src) if src else p, models_dir() / f"{p.stem}-{quant}.gguf"
    if not inp.is_file():
        raise DraftwiseError(f"{inp} does not exist")
    if out.is_file():
        return out

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
    _run(inp, out, quant, threads, allow_requantize=in_catalog or allow_requantize)
    return out


def _run(inp: Path, out: Path, quant: str, threads: int | None, allow_requantize: bool) -> None:
    try:
        import llama_cpp
    except ImportError:
        raise DraftwiseError("quantizing needs llama-cpp-python: pip install 'draftwise[llamacpp]'") \
            from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[quant][0])
    params.allow_requantize = allow_requantize
    params.nthread = threads or 0  # 0: llama.cpp uses all hardware threads
    tmp = out.with_name(f"{out.name}.{os.getpid()}.partial")
    try:
        rc = llama_cpp.llama_model_quantize(str(inp).encode(), str(tmp).encode(),
                                            llama_cpp.byref(params))
        if rc != 0:
            raise DraftwiseError(f"llama.cpp failed to quantize {inp.name} to {quant} "
                                 f"(return code {rc}); its log above says why")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
