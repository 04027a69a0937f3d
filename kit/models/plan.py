"""What will run on this machine, decided before anything heavy loads: backend, 4-bit, vLLM, dtype, optimizer.

`plan()` downgrades GPU-only requests on a CPU with a note and refuses impossible explicit ones with a
`RecipeError` that says what to change. Every later step (loading, generation, TRL's arguments, `kit fit`) reads
the plan instead of deciding again.

Who generates: Unsloth's own vLLM engine (backend unsloth + fast_inference), TRL's colocated vLLM engine
(backend transformers + fast_inference, wherever `vllm` imports: a CUDA GPU, or the CPU build of the test profile),
a `trl vllm-serve` server (model.vllm_server, CUDA only), else HF `generate`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from kit.errors import KitError, RecipeError
from kit.models.catalog import TINY
from kit.recipe import Recipe


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    name: str = "cpu"
    capability: tuple[int, int] | None = None
    total_gb: float = 0.0

    @property
    def bf16(self) -> bool:
        return self.cuda and self.capability is not None and self.capability >= (8, 0)


def detect_hardware() -> Hardware:
    import torch

    if not torch.cuda.is_available():
        return Hardware(cuda=False)
    props = torch.cuda.get_device_properties(0)
    return Hardware(cuda=True, name=props.name, capability=torch.cuda.get_device_capability(0),
                    total_gb=props.total_memory / 2**30)


@dataclass(frozen=True)
class Plan:
    """What will run here. `notes` explain every choice that differs from the recipe."""
    backend: str
    load_in_4bit: bool
    fast_inference: bool
    dtype: str
    optim: str
    hardware: Hardware
    notes: tuple[str, ...] = field(default=())

    @property
    def device(self) -> str:
        return "cuda" if self.hardware.cuda else "cpu"


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def plan(recipe: Recipe, hw: Hardware | None = None) -> Plan:
    """Resolve backend/4-bit/vLLM/dtype/optimizer for this machine, or raise a RecipeError that says what to
    change. Cheap: imports torch only to look at the GPU."""
    hw = hw or detect_hardware()
    m, notes = recipe.model, []
    backend = m.backend
    if backend == "unsloth" and not hw.cuda:
        raise RecipeError("model.backend: unsloth needs a CUDA GPU and none was found; set model.backend=auto "
                          "(falls back to transformers) or run on a GPU")
    if backend == "unsloth" and not _importable("unsloth"):
        raise RecipeError("model.backend: unsloth is not installed; pip install -e '.[gpu]' or set "
                          "model.backend=transformers")
    if backend == "auto":
        if hw.cuda and _importable("unsloth"):
            backend = "unsloth"
            notes.append(f"backend auto -> unsloth (CUDA GPU {hw.name}, unsloth installed)")
        else:
            backend = "transformers"
            why = "no CUDA GPU" if not hw.cuda else "unsloth not installed (pip install -e '.[gpu]')"
            notes.append(f"backend auto -> transformers ({why})")
    if m.name == TINY and backend == "unsloth":
        backend = "transformers"
        notes.append("builtin:tiny is not an Unsloth-supported architecture size; using transformers")

    load_in_4bit = m.load_in_4bit
    if load_in_4bit and not hw.cuda:
        load_in_4bit = False
        notes.append("model.load_in_4bit: 4-bit (bitsandbytes) needs a CUDA GPU; loading full precision on CPU")
    if load_in_4bit and backend == "transformers" and not _importable("bitsandbytes"):
        raise RecipeError("model.load_in_4bit: bitsandbytes is not installed; pip install bitsandbytes or set "
                          "model.load_in_4bit=false")

    if m.vllm_server and backend == "unsloth":
        raise RecipeError("model.vllm_server: a vLLM server is for the transformers backend (multi-GPU); Unsloth "
                          "runs its own vLLM engine. Set model.backend=transformers or drop vllm_server")
    if m.vllm_server and not hw.cuda:
        # TRL pushes the trained weights to the server through vLLM's NCCL weight-transfer engine (CUDA only);
        # without it the server would keep answering with the base model.
        raise RecipeError("model.vllm_server: TRL syncs the trained weights to a vLLM server over NCCL, which needs "
                          "a CUDA GPU; on CPU drop model.vllm_server (model.fast_inference=true runs vLLM in-process)")
    fast = m.fast_inference
    if m.vllm_server and fast:
        fast = False
        notes.append(f"model.vllm_server: rollouts come from the vLLM server at {m.vllm_server}; "
                     "model.fast_inference (an in-process engine) is not used")
    elif fast and hw.capability is not None and hw.capability < (7, 0):
        fast = False
        notes.append(f"model.fast_inference: vLLM needs compute capability 7.0+, {hw.name} has "
                     f"{'.'.join(map(str, hw.capability))}; "
                     f"{'Unsloth' if backend == 'unsloth' else 'HF generate'} generates without it")
    elif fast and not _importable("vllm"):
        fast = False
        notes.append("model.fast_inference: vllm is not installed; "
                     f"{'Unsloth generates' if backend == 'unsloth' else 'HF generate answers'} without it "
                     "(slower). See docs/install.md")
    elif fast and backend == "transformers":
        where = "a CUDA GPU" if hw.cuda else "CPU, vLLM's CPU build in bfloat16 (test profile, see docs/install.md)"
        notes.append(f"model.fast_inference: TRL's colocated vLLM generates the rollouts on {where}; evaluation "
                     "and sampling use the same engine with the trained weights synced in")

    dtype = m.dtype
    if dtype == "auto":
        dtype = "float32" if not hw.cuda else ("bfloat16" if hw.bf16 else "float16")
    elif dtype == "bfloat16" and hw.cuda and not hw.bf16:
        cap = ".".join(map(str, hw.capability or ()))
        raise RecipeError(f"model.dtype: bfloat16 is not supported by {hw.name} (compute capability {cap}, needs "
                          "8.0+); set model.dtype=auto or float16")
    elif dtype == "float16" and not hw.cuda:
        raise RecipeError("model.dtype: float16 training needs a CUDA GPU; on CPU use model.dtype=auto (float32)")

    optim = recipe.grpo.optim
    if optim == "auto":
        optim = "adamw_8bit" if hw.cuda and _importable("bitsandbytes") else "adamw_torch"
    elif "8bit" in optim and not (hw.cuda and _importable("bitsandbytes")):
        raise RecipeError(f"grpo.optim: {optim} needs bitsandbytes on a CUDA GPU; use grpo.optim=auto")
    return Plan(backend, load_in_4bit, fast, dtype, optim, hw, tuple(notes))


def check_vllm_server(url: str, timeout: float = 5.0) -> None:
    """Raise a one-line KitError unless a `trl vllm-serve` answers at `url` (its /health endpoint)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health/", timeout=timeout) as r:
            if r.status == 200:
                return
            why = f"HTTP {r.status}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = str(getattr(e, "reason", e))
    raise KitError(f"model.vllm_server: nothing answers at {url} ({why}); start it first (trl vllm-serve --model "
                   "<the recipe's model.name> --port PORT) or drop model.vllm_server")
