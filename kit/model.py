"""Model loading: the only module that imports unsloth (and it does so before trl/transformers/peft).

`plan()` decides, before anything heavy is loaded, what will actually run on this machine: backend, 4-bit,
vLLM, dtype and optimizer — downgrading GPU-only requests on a CPU with a note, refusing impossible explicit
ones with a `RecipeError`. `load()` then builds the trainable LoRA model; `load_for_inference()` the model used by
evaluation, chat and export.

Who generates: Unsloth's own vLLM engine (backend unsloth + fast_inference), TRL's colocated vLLM engine
(backend transformers + fast_inference, wherever `vllm` imports: a CUDA GPU, or the CPU build of the test profile),
a `trl vllm-serve` server (model.vllm_server, CUDA only), else HF `generate`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from kit.recipe import KitError, ModelSpec, Recipe, RecipeError

TINY = "builtin:tiny"
SMOLLM2 = "builtin:smollm2-135m"  # kit/smollm2.py: a real pretrained model from a PyPI wheel


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


def vllm_environment(hw: Hardware) -> None:
    """What vLLM's CPU build needs on a small machine, set before an engine starts (values already set are kept),
    and the one work-around of vLLM internals the kit carries (below)."""
    if hw.cuda:
        return
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")       # GiB of KV cache; the default 4 is a small box's RAM
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # the default keeps a core free: half of 2 cores
    _keep_vllm_cpu_weights()


def _keep_vllm_cpu_weights() -> None:
    """Work-around (vLLM CPU build 0.32): after loading, vLLM repacks each linear layer's weight for its oneDNN /
    SGL kernels and replaces the Parameter by an empty one without `weight_loader` (the LM head keeps its weight
    but computes from the packed copy). Weights loaded later (TRL's sync after each step, the kit's adapter) then
    fail with `'Parameter' object has no attribute 'weight_loader'` or are silently ignored. Which layers get packed
    depends on the CPU (AVX-512 BF16 / AMX) and dtype. So on CPU every unquantized linear layer computes with
    torch's F.linear on its own weight. tests/test_vllm.py (weight sync) fails if this stops working."""
    import torch
    from vllm.model_executor.layers import utils as vllm_layer_utils

    if not hasattr(vllm_layer_utils, "dispatch_cpu_unquantized_gemm"):
        raise KitError("vLLM's CPU build changed (no vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm): "
                       "the kit cannot load trained weights into it; use the CPU build named in docs/install.md")

    def plain_linear(layer, remove_weight: bool) -> None:
        layer.cpu_linear = torch.nn.functional.linear

    vllm_layer_utils.dispatch_cpu_unquantized_gemm = plain_linear


def vllm_dtype(p: Plan) -> str:
    """vLLM's dtype: the plan's on a GPU; bfloat16 on CPU, which is what TRL's colocated engine runs there (vLLM
    downcasts float32 checkpoints on CPU), so evaluation answers like the engine that generated the rollouts."""
    return p.dtype if p.hardware.cuda else "bfloat16"


def start_vllm(m: ModelSpec, p: Plan):
    """A vLLM engine in this process, set up as TRL's colocate mode does (external_launcher: the model lives in this
    process, so the trained weights can be loaded into it). Used for evaluation, chat and sampling on the
    transformers backend; during GRPO training TRL's own colocated engine is used instead."""
    import socket

    vllm_environment(p.hardware)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if not os.environ.get("MASTER_PORT"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    from vllm import LLM

    return LLM(model=model_path(m.name), dtype=vllm_dtype(p), gpu_memory_utilization=m.gpu_memory_utilization,
               max_model_len=m.max_seq_length, max_num_batched_tokens=max(4096, m.max_seq_length),
               distributed_executor_backend="external_launcher", seed=0)


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


def model_path(name: str) -> str:
    """Hub id or local folder to load; builds a built-in model on first use (builtin:tiny in seconds,
    builtin:smollm2-135m from its PyPI wheel in about 30 s)."""
    if name == TINY:
        from kit import tiny

        return str(tiny.tiny_path())
    if name == SMOLLM2:
        from kit import smollm2

        return str(smollm2.smollm2_path())
    if name.startswith("builtin:"):
        raise RecipeError(f"model.name: unknown built-in model {name!r}; the built-in ones are {TINY} and "
                          f"{SMOLLM2}")
    return name


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _lora_kwargs(m: ModelSpec) -> dict:
    return dict(r=m.lora_rank, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                target_modules=list(m.lora_target_modules),
                modules_to_save=list(m.modules_to_save) or None)


def load(recipe: Recipe, p: Plan, seed: int):
    """The trainable model (base + fresh LoRA adapter) and its tokenizer."""
    m = recipe.model
    if p.backend == "unsloth":
        return _load_unsloth(m, p, seed, adapter=None)
    if p.fast_inference:
        vllm_environment(p.hardware)  # TRL starts its colocated engine inside GRPOTrainer
    model, tokenizer = _load_transformers_base(m, p)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if p.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=m.gradient_checkpointing)
    elif m.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    import torch

    torch.manual_seed(seed)
    _check_targets(model, m)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **_lora_kwargs(m)))
    return model, tokenizer


def _check_targets(model, m: ModelSpec) -> None:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in m.lora_target_modules if t not in names]
    if missing:
        raise RecipeError(f"model.lora_target_modules: {', '.join(missing)} not in this model; its linear layers "
                          f"include {', '.join(sorted(n for n in names if n.endswith('proj'))[:10])}")


def _load_transformers_base(m: ModelSpec, p: Plan):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_path(m.name)
    kwargs = {"dtype": _torch_dtype(p.dtype)}
    if p.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_torch_dtype(p.dtype))
    if p.hardware.cuda:
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise KitError(f"model.name: could not load {m.name!r}: {str(e).splitlines()[0][:200]}. Offline? Use a "
                       "local folder, builtin:tiny or builtin:smollm2-135m (make real-model)") from None
    _prepare_tokenizer(tokenizer, model, m.name)
    return model, tokenizer


def _prepare_tokenizer(tokenizer, model, name: str) -> None:
    """Chat template required; eos = the token that ends an assistant turn and every stop id in the model's
    generation_config (kit.stopping), so every generation path, TRL's included, stops where a turn ends."""
    if tokenizer.chat_template is None:
        raise KitError(f"model.name: {name} has no chat template; use an -Instruct/-it model (GRPO prompts are "
                       "chat messages)")
    from kit import compat, stopping

    stopping.prepare(tokenizer, model)
    compat.causal_lm_inputs(tokenizer)  # transformers 4.x: no token_type_ids to generate()


def _load_unsloth(m: ModelSpec, p: Plan, seed: int, adapter: Path | None):
    # Unsloth must be imported before trl/transformers/peft so its patches apply.
    os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")  # vLLM and training share memory (Unsloth's docs)
    import unsloth  # noqa: F401
    from unsloth import FastLanguageModel

    kwargs = dict(max_seq_length=m.max_seq_length, load_in_4bit=p.load_in_4bit, dtype=_torch_dtype(p.dtype),
                  fast_inference=p.fast_inference)
    if p.fast_inference:
        kwargs.update(max_lora_rank=m.lora_rank, gpu_memory_utilization=m.gpu_memory_utilization)
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_path(m.name), **kwargs)
    except Exception as e:  # noqa: BLE001  vLLM's start-up failures have no common type; re-raised as one line
        if not p.fast_inference:
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise KitError(f"model.fast_inference: loading {m.name} with vLLM failed on {p.hardware.name} "
                       f"({type(e).__name__}: {first}). To train with Unsloth's own generation instead (slower, "
                       "no vLLM): --set model.fast_inference=false; if it ran out of memory, lower "
                       "model.gpu_memory_utilization. See docs/install.md") from e
    _prepare_tokenizer(tokenizer, model, m.name)
    lora = _lora_kwargs(m)
    model = FastLanguageModel.get_peft_model(
        model, r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
        target_modules=lora["target_modules"], modules_to_save=lora["modules_to_save"],
        use_gradient_checkpointing="unsloth" if m.gradient_checkpointing else False, random_state=seed)
    if adapter is not None:
        load_adapter_weights(model, adapter)
    return model, tokenizer


def load_adapter_weights(model, adapter: Path) -> None:
    """Load a saved LoRA adapter's weights into an already-built PEFT model (continuing a pipeline stage)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        result = set_peft_model_state_dict(model, load_file(str(Path(adapter) / "adapter_model.safetensors")))
    except RuntimeError as e:  # shapes differ: another LoRA rank or model
        raise KitError(f"{adapter}: adapter does not fit this model ({str(e).splitlines()[-1].strip()[:160]}); "
                       "was it trained with another recipe (model or LoRA settings)?") from None
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise KitError(f"{adapter}: adapter does not fit this model ({len(unexpected)} unexpected weights, e.g. "
                       f"{unexpected[0]}); was it trained from another recipe?")


def load_for_inference(recipe: Recipe, adapter: Path | None, p: Plan | None = None):
    """(model, tokenizer, vllm) for evaluation, chat and export: the recipe's base model with the adapter at
    `adapter` (None: base only). `vllm` is what kit.generation.Generator takes as its third argument:
    - Unsloth + vLLM: generation goes through `model.fast_generate`, the adapter through a LoRA request;
    - transformers + vLLM: a `kit.generation.VLLMEngine`, an in-process vLLM engine into which the PEFT model's
      merged weights are loaded (a LoRA request cannot carry modules_to_save); the PEFT model stays on the CPU as
      the source of the weights;
    - otherwise None: the PEFT model generates (its adapter can be disabled for base answers)."""
    p = p or plan(recipe)
    m = recipe.model
    if p.backend == "unsloth":
        model, tokenizer = _load_unsloth(m, p, seed=0, adapter=None if p.fast_inference else adapter)
        lora_request = model.load_lora(str(adapter)) if (adapter is not None and p.fast_inference) else None
        if not p.fast_inference:
            from unsloth import FastLanguageModel

            FastLanguageModel.for_inference(model)
        return model, tokenizer, lora_request
    # Inference needs no 4-bit quantization on CPU and no gradient checkpointing. With vLLM, the HF copy is only
    # the source of the weights: it stays on the CPU, unquantized.
    source = replace(p, load_in_4bit=False, hardware=Hardware(cuda=False)) if p.fast_inference else p
    model, tokenizer = _load_transformers_base(replace(m, gradient_checkpointing=False), source)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    if p.fast_inference:
        from kit.generation import VLLMEngine

        return model, tokenizer, VLLMEngine(start_vllm(m, p), "vLLM (in-process engine, adapter merged in)")
    return model, tokenizer, None
