"""DistillOptions: everything one `draftwise distill` run is made of, validated once.

Saved as options.json in the run directory: `--resume` reloads it, so a resumed run is the same
recipe, and the registry shows it next to the model.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from draftwise.bench.prompts import ALIASES, CATEGORIES
from draftwise.distill.gguffile import LAYER_CHOICES
from draftwise.distill.losses import LOSSES
from draftwise.errors import DraftwiseError
from draftwise.models.catalog import QUANTS

MODES = ("greedy", "sampling")
DTYPES = ("auto", "float32", "bfloat16")
# Default divergence per decoding mode. Greedy: forward KL matches the target's whole top of the
# distribution, which is what moves the draft's argmax onto the target's (DistillSpec, Zhou et
# al. 2024, found FKL/JSD best for greedy). Sampling: acceptance under rejection sampling is
# exactly 1 - TVD(p, q) (Leviathan et al. 2023), so TVD optimizes it directly.
DEFAULT_LOSS = {"greedy": "fkl", "sampling": "tvd"}
BUILTIN_PROMPTS = 20  # prompts per built-in category
# The linear layers of a block LoRA can adapt (the HF names of every architecture draftwise loads
# from GGUF), and shorthands for groups of them.
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_GROUPS = {"all": LORA_MODULES, "attn": LORA_MODULES[:4], "mlp": LORA_MODULES[4:]}
# --adapter's default: llama.cpp applies a LoRA on gate_proj/up_proj at a cost (a 69-token
# forward x1.24 with it on the three MLP projections, x1.065 on attention and down_proj; free on
# one-token steps either way), and trained on these five the draft agreed as much (README,
# ninth run).
ADAPTER_MODULES = (*LORA_GROUPS["attn"], "down_proj")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_QUANT_SUFFIX = re.compile(rf"-({'|'.join(QUANTS)})$")


@dataclass(frozen=True)
class DistillOptions:
    """One distillation recipe. None fields get their defaults in __post_init__ (by mode, by
    LoRA vs full fine-tuning, by prompt source)."""

    target: str
    draft: str
    out: str
    categories: tuple[str, ...] = ()
    prompts: str | None = None  # JSONL file instead of built-in categories
    data: str | None = None  # JSONL {"prompt", "completion"}: train on these (no gen stage)
    n_prompts: int | None = None  # training prompts per category (file: in all)
    n_eval: int | None = None  # held-out prompts per category (file: in all)
    n_eval_other: int = 3  # prompts of each other category in the evaluation
    eval_categories: tuple[str, ...] | None = None  # the "other" categories (default: all others)
    max_tokens: int = 128  # continuation length per prompt (gen and eval)
    max_prompt_tokens: int = 1536  # longer prompts are skipped
    mode: str = "greedy"  # the decoding mode to distill for
    loss: str | None = None
    top_k: int = 32  # target log-probabilities kept per position
    lora_rank: int = 16
    lora_modules: tuple[str, ...] | None = None  # what LoRA adapts (default: all; --adapter:
    # ADAPTER_MODULES)
    full: bool = False
    layers: int | None = None  # keep this many of the draft's blocks
    layer_choice: str = "similar"  # which blocks --layers keeps (layers.py, gguffile.py)
    epochs: int = 3
    steps: int | None = None  # optimizer steps; overrides epochs
    batch_seqs: int = 4  # sequences per optimizer step
    prompt_grad: bool = True  # backpropagate through the prompt's positions (train.step_loss)
    val_fraction: float = 0.1  # training prompts kept for validation loss and early stopping
    lr: float | None = None
    samples: int = 4  # draft continuations per prompt: the first at gen_temperature, then T=1
    target_mix: float = 0.0  # fraction of prompts also continued by the target
    gen_temperature: float | None = None
    dtype: str = "auto"  # training precision; auto: bfloat16 where the CPU has it (see train.py)
    quant: str | None = "q4_0"  # also write NAME-<quant> with llama.cpp's quantizer
    adapter: bool = False  # train on the draft at `quant`, export a LoRA adapter (export.py)
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        if not _NAME.match(self.out) or self.out.endswith(".gguf") or \
                _QUANT_SUFFIX.search(self.out):
            raise DraftwiseError(f"--out {self.out!r} is not a usable model name: letters, digits, "
                                 "'.', '_' and '-', not ending in .gguf or a quantization suffix")
        if self.mode not in MODES:
            raise DraftwiseError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        put("loss", self.loss or ("ce" if self.data else DEFAULT_LOSS[self.mode]))
        if self.loss not in LOSSES:
            raise DraftwiseError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.loss == "ce" and not self.data:
            raise DraftwiseError("--loss ce trains on given completions (hard labels): add --data "
                                 "FILE.jsonl with {\"prompt\", \"completion\"} rows")
        cats = tuple(dict.fromkeys(_category(c) for c in self.categories))
        if sum(map(bool, (cats, self.prompts, self.data))) > 1:
            raise DraftwiseError("give one of --prompts FILE, --data FILE or -c CATEGORY")
        for attr, what, path in (("prompts", "prompt", self.prompts), ("data", "data", self.data)):
            if path:
                if not Path(path).expanduser().is_file():
                    raise DraftwiseError(f"{what} file {path} does not exist")
                put(attr, str(Path(path).expanduser().resolve()))
        put("categories", cats or (() if self.file else ("code",)))
        others = tuple(c for c in CATEGORIES if c not in self.categories)
        put("eval_categories", tuple(dict.fromkeys(_category(c) for c in self.eval_categories))
            if self.eval_categories is not None else others)
        if not self.file:
            n = self.n_prompts if self.n_prompts is not None else 14
            m = self.n_eval if self.n_eval is not None else min(6, BUILTIN_PROMPTS - n)
            if n + m > BUILTIN_PROMPTS or m < 1:
                raise DraftwiseError(f"a built-in category has {BUILTIN_PROMPTS} prompts: "
                                     f"--n-prompts {n} leaves {max(0, BUILTIN_PROMPTS - n)} for "
                                     "evaluation; train on at most "
                                     f"{BUILTIN_PROMPTS - 1} (14 keeps 6 held out)")
            put("n_prompts", n)
            put("n_eval", m)
        for name, lo in (("n_prompts", 1), ("n_eval", 1), ("n_eval_other", 0), ("max_tokens", 2),
                         ("max_prompt_tokens", 8), ("top_k", 1), ("lora_rank", 1), ("epochs", 1),
                         ("batch_seqs", 1), ("samples", 1)):
            v = getattr(self, name)
            if v is not None and v < lo:
                raise DraftwiseError(f"{name.replace('_', '-')} must be >= {lo}, got {v}")
        if self.steps is not None and self.steps < 1:
            raise DraftwiseError(f"--steps must be >= 1, got {self.steps}")
        if self.layers is not None and self.layers < 1:
            raise DraftwiseError(f"--layers must be >= 1, got {self.layers}")
        if self.layer_choice not in LAYER_CHOICES:
            raise DraftwiseError(f"layer choice must be one of {', '.join(LAYER_CHOICES)}")
        put("lr", self.lr if self.lr is not None else (2e-5 if self.full else 2e-4))
        if not 0 < self.lr < 1:
            raise DraftwiseError(f"--lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.val_fraction < 0.5:
            raise DraftwiseError(f"--val-fraction must be in [0, 0.5), got {self.val_fraction}")
        if not 0 <= self.target_mix <= 1:
            raise DraftwiseError(f"target mix must be in [0, 1], got {self.target_mix}")
        put("gen_temperature", self.gen_temperature if self.gen_temperature is not None
            else (0.0 if self.mode == "greedy" else 1.0))
        if self.gen_temperature < 0:
            raise DraftwiseError(f"gen temperature must be >= 0, got {self.gen_temperature}")
        if self.dtype not in DTYPES:
            raise DraftwiseError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.quant in ("", "none"):
            put("quant", None)
        if self.quant is not None and self.quant not in QUANTS:
            raise DraftwiseError(f"quant must be one of {', '.join(QUANTS)} or none")
        if self.adapter and (self.full or self.layers or self.quant is None):
            what = "--full" if self.full else "--layers" if self.layers else "--quant none"
            raise DraftwiseError(f"--adapter trains a LoRA on the draft at --quant and cannot go "
                                 f"with {what}; leave one of them out")
        put("lora_modules", lora_module_names(self.lora_modules) if self.lora_modules is not None
            else ADAPTER_MODULES if self.adapter else LORA_MODULES)
        if self.full and self.lora_modules != LORA_MODULES:
            raise DraftwiseError("--lora-modules picks what a LoRA adapts; --full trains every "
                                 "weight: leave one of them out")

    @property
    def file(self) -> str | None:
        """The prompt or completion file the data comes from (None: built-in categories)."""
        return self.data or self.prompts

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> DistillOptions:
        names = {f.name for f in fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        kw.setdefault("val_fraction", 0.0)  # recipes stored before validation existed had none
        kw.setdefault("lora_modules", ("all",))  # nor a choice of modules
        return cls(**kw)

    def differences(self, other: DistillOptions) -> list[str]:
        """Fields where other differs (for refusing a --resume with another recipe)."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if a[k] != b[k]]

    def recipe(self) -> str:
        """One line: how the model is made."""
        data = ",".join(self.categories) if not self.file else Path(self.file).name
        how = "full" if self.full else f"lora r{self.lora_rank}" + (
            "" if self.lora_modules == LORA_MODULES else f" on {','.join(self.lora_modules)}")
        length = f"{self.steps} steps" if self.steps else f"{self.epochs} epochs"
        parts = [f"{self.loss} on the completions of {Path(self.data).name}" if self.data
                 else f"{self.loss} ({self.mode}) from {self.target}",
                 f"{how}, {length}, lr {self.lr:g}",
                 f"{data} x{self.n_prompts or 'all'} prompts x{self.samples}, "
                 f"{self.max_tokens} tokens"]
        if self.target_mix:
            parts.append(f"target mix {self.target_mix:g}")
        if self.layers:
            parts.append(f"{self.layers} blocks ({self.layer_choice})")
        if self.adapter:
            parts.append(f"adapter on the {self.quant} draft")
        return "; ".join(parts)


def lora_module_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Names and group shorthands -> the modules, in LORA_MODULES order."""
    picked = set()
    for n in names:
        if n not in LORA_MODULES and n not in LORA_GROUPS:
            raise DraftwiseError(f"unknown LoRA module {n!r}; choose from "
                                 f"{', '.join((*LORA_GROUPS, *LORA_MODULES))}")
        picked.update(LORA_GROUPS.get(n, (n,)))
    if not picked:
        raise DraftwiseError("--lora-modules names no module; give e.g. all, attn or q_proj")
    return tuple(m for m in LORA_MODULES if m in picked)


def _category(c: str) -> str:
    cat = ALIASES.get(c.lower(), c.lower())
    if cat not in CATEGORIES:
        raise DraftwiseError(f"unknown category {c!r}; choose from {', '.join(CATEGORIES)}")
    return cat
