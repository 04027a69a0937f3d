"""Model loading: the only module that imports unsloth (and it does so before trl/transformers/peft).

`load()` builds the trainable LoRA model the plan (kit.models.plan) asks for; `load_for_inference()` the model
used by evaluation, chat and export, with the generation engine that answers for it (kit.models.engines).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from kit.errors import KitError, RecipeError
from kit.models import compat, engines, stopping
from kit.models.adapters import load_adapter_weights
from kit.models.catalog import model_path
from kit.models.plan import Hardware, Plan, bnb_backend, plan
from kit.recipe import ModelSpec, Recipe


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
        model, tokenizer = _load_unsloth(m, p, seed, adapter=None)
        if p.fast_inference:  # evaluation during training and rejection sampling answer through Unsloth's vLLM
            engines.attach_engine(model, engines.UnslothVLLM)
        return model, tokenizer
    if p.fast_inference:
        engines.vllm_environment(p.hardware)  # TRL starts its colocated engine inside GRPOTrainer
    model, tokenizer = _load_transformers_base(m, p)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if p.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=m.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif m.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    import torch

    torch.manual_seed(seed)
    _check_targets(model, m)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **_lora_kwargs(m)))
    return model, tokenizer


def keep_dequantizing(model) -> None:
    """Keep every 4-bit layer on bitsandbytes' dequantizing path: it backpropagates and computes in the plan's dtype.

    On a CPU with AVX512-BF16, a `Linear4bit`'s first forward in eval mode without grad (the step-0 evaluation,
    any generation) repacks its weights for a bf16 inference kernel (bitsandbytes::gemv_4bit) and every later
    forward goes through it, training ones included; that kernel has no autograd formula, so gradients through the
    frozen 4-bit weights vanish from then on (LoRA tensors upstream get none or wrong ones, and the only sign is a
    UserWarning). Inference loads keep off it too, though it generates ~1.45x faster (docs/benchmarks.md, "4-bit
    on CPU"): it computes in bfloat16, so evaluation and chat would answer otherwise than the model did in training
    and than its merged export does (SmolLM2-135M: 3 of 8 greedy answers alike), and a repacked layer no longer
    holds the layout export dequantizes. `support_avx512bf16_for_cpu` is the layer's own switch for the repack."""
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


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
        bnb_backend()  # imports bitsandbytes quietly (kit.models.plan), before transformers does
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
    if p.load_in_4bit:
        keep_dequantizing(model)
    _prepare_tokenizer(tokenizer, model, m.name)
    return model, tokenizer


def _prepare_tokenizer(tokenizer, model, name: str) -> None:
    """Chat template required; eos = the token that ends an assistant turn and every stop id in the model's
    generation_config (kit.models.stopping), so every generation path, TRL's included, stops where a turn ends."""
    if tokenizer.chat_template is None:
        raise KitError(f"model.name: {name} has no chat template; use an -Instruct/-it model (GRPO prompts are "
                       "chat messages)")

    stopping.prepare(tokenizer, model)
    compat.causal_lm_inputs(tokenizer)  # transformers 4.x: no token_type_ids to generate()


def unsloth_kwargs(m: ModelSpec, p: Plan, seed: int, model_name: str | None = None) -> tuple[dict, dict]:
    """The keyword arguments `_load_unsloth` passes to `FastLanguageModel.from_pretrained` and (besides the model)
    to `FastLanguageModel.get_peft_model`, built without importing Unsloth, so a check can hold them against the
    installed Unsloth's signatures (make test-unsloth-import). `model_name`: the folder or Hub id to load (default:
    the recipe's model.name as written; loading passes the resolved path)."""
    load = dict(model_name=model_name or m.name, max_seq_length=m.max_seq_length, load_in_4bit=p.load_in_4bit,
                dtype=_torch_dtype(p.dtype), fast_inference=p.fast_inference)
    if p.fast_inference:
        load.update(max_lora_rank=m.lora_rank, gpu_memory_utilization=m.gpu_memory_utilization)
    lora = _lora_kwargs(m)
    peft = dict(r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
                target_modules=lora["target_modules"], modules_to_save=lora["modules_to_save"],
                use_gradient_checkpointing="unsloth" if m.gradient_checkpointing else False, random_state=seed)
    return load, peft


def _load_unsloth(m: ModelSpec, p: Plan, seed: int, adapter: Path | None):
    # Unsloth must be imported before trl/transformers/peft so its patches apply.
    os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")  # vLLM and training share memory (Unsloth's docs)
    import unsloth  # noqa: F401
    from unsloth import FastLanguageModel

    load_kwargs, peft_kwargs = unsloth_kwargs(m, p, seed, model_name=model_path(m.name))
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(**load_kwargs)
    except Exception as e:  # noqa: BLE001  vLLM's start-up failures have no common type; re-raised as one line
        if not p.fast_inference:
            raise
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise KitError(f"model.fast_inference: loading {m.name} with vLLM failed on {p.hardware.name} "
                       f"({type(e).__name__}: {first}). To train with Unsloth's own generation instead (slower, "
                       "no vLLM): --set model.fast_inference=false; if it ran out of memory, lower "
                       "model.gpu_memory_utilization. See docs/install.md") from e
    _prepare_tokenizer(tokenizer, model, m.name)
    model = FastLanguageModel.get_peft_model(model, **peft_kwargs)
    if adapter is not None:
        load_adapter_weights(model, adapter)
    return model, tokenizer


def load_for_inference(recipe: Recipe, adapter: Path | None, p: Plan | None = None):
    """(model, tokenizer, engine) for evaluation, chat and export: the recipe's base model with the adapter at
    `adapter` (None: base only), and the kit.models.engines engine the plan picks to answer for it:
    - Unsloth + vLLM: `UnslothVLLM`, generation through `model.fast_generate`, the adapter as a LoRA request;
    - transformers + vLLM: `InProcessVLLM`, an in-process vLLM engine into which the PEFT model's merged weights are
      loaded (a LoRA request cannot carry modules_to_save); the PEFT model stays on the CPU as the source of the
      weights;
    - otherwise `HFGenerate`: the PEFT model generates (its adapter can be disabled for base answers)."""
    p = p or plan(recipe)
    m = recipe.model
    if p.backend == "unsloth":
        model, tokenizer = _load_unsloth(m, p, seed=0, adapter=None if p.fast_inference else adapter)
        if not p.fast_inference:
            from unsloth import FastLanguageModel

            FastLanguageModel.for_inference(model)
            return model, tokenizer, engines.HFGenerate(model, tokenizer)
        engine = engines.UnslothVLLM(model, tokenizer)
        if adapter is not None:
            engine.load_adapter(adapter)
        return model, tokenizer, engine
    # The weights as the plan says (a run's plan follows how it was trained: kit.runs.trained_plan); no gradient
    # checkpointing. With vLLM, the HF copy is only the source of the weights: it stays on the CPU, unquantized.
    source = replace(p, load_in_4bit=False, hardware=Hardware(cuda=False)) if p.fast_inference else p
    model, tokenizer = _load_transformers_base(replace(m, gradient_checkpointing=False), source)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    if p.fast_inference:
        engine = engines.InProcessVLLM(model, tokenizer, engines.start_vllm(m, p),
                                       "vLLM (in-process engine, adapter merged in)")
        return model, tokenizer, engine
    return model, tokenizer, engines.HFGenerate(model, tokenizer)
