"""Will a recipe fit the GPU? A peak-VRAM estimate from the model's config and the recipe, before anything loads.

    kit fit recipes/qwen2.5-1.5b.yaml                  # against this GPU, else a 16 GB T4
    kit fit recipes/qwen2.5-3b.yaml --gpu-memory 24

The estimate adds up the terms that are alive at the memory peak of one GRPO step:

  base weights      4-bit nf4 (0.52 bytes/param incl. double-quantised scales; embeddings stay 16-bit) or 16-bit
  LoRA              params + grads in fp32 + optimizer states (adamw_8bit: ~2 bytes/param, 8 under 4096; torch: 8)
  logits            micro-batch x (completion + 1) x vocab in 16-bit: one copy. Often the biggest term: vocabularies
                    are 128-262k. TRL + PEFT: alive together with the activations. Unsloth: its GRPO loss takes
                    hidden states and computes log-probs one fp32 chunk at a time (+ that chunk), and this peak
                    comes before the layers are recomputed, so the larger of the two phases counts.
  activations       with gradient checkpointing: each layer's input (PEFT keeps them on the GPU; Unsloth's
                    variant offloads them to CPU RAM) plus one layer recomputed in the backward pass
  vLLM              gpu_memory_utilization x GPU: vLLM reserves it up front for weights + KV cache. With
                    UNSLOTH_VLLM_STANDBY (kit.models.loading sets it) the KV cache is freed while training and the weights
                    are shared, so generation and training peak separately and the larger one counts.
  allocator slack   cuBLAS workspaces and fragmentation inside PyTorch's caching allocator
  CUDA context      outside PyTorch's allocator: nvidia-smi shows it, torch.cuda.max_memory_reserved() doesn't

Calibrated against measured anchors (H100, random weights, G=8, LoRA r16, HF generation; docs/benchmarks.md):
`ANCHORS` below, checked by tests/test_fit.py. Everything here is arithmetic on JSON: no torch import, so
`kit list` can show an estimate for every recipe.

    >>> from kit.recipe import load_recipe
    >>> est = estimate(load_recipe("recipes/demo.yaml"))
    >>> est.total_gb < 2
    True
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from kit.errors import KitError
from kit.models import catalog, tiny
from kit.models.plan import detect_hardware
from kit.models.plan import plan as make_plan
from kit.recipe import (
    Recipe,
    apply_overrides,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
)

GIB = 2**30
T4_GIB = 14.74            # what CUDA reports for a "16 GB" Tesla T4 (total_memory / 2**30)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)   # 4-bit values + 8-bit absmax per 64 + fp32 scale per 256 blocks
CONTEXT_GIB = 0.5         # CUDA context + kernels, outside PyTorch's allocator (T4/H100 with CUDA 12-13: ~0.3-0.6)
SLACK_GIB = 0.3           # cuBLAS workspaces + allocator fragmentation; fitted to the anchors below
BNB_MIN_8BIT = 4096       # bitsandbytes' 8-bit optimizers: tensors with fewer elements keep 32-bit states
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Measured elsewhere: peak torch.cuda.max_memory_reserved() in GiB for GRPO with G=8 completions per step (one
# question, micro-batch 8), LoRA r16 on all linear layers, HF generation (no vLLM), random weights, H100,
# 2026-11-22. (config file, backend, 4-bit, completion tokens, measured GiB).
ANCHORS = (
    ("Qwen2.5-1.5B-Instruct", "transformers", False, 256, 4.56),
    ("Qwen2.5-1.5B-Instruct", "transformers", True, 256, 2.59),
    ("Qwen2.5-1.5B-Instruct", "unsloth", True, 256, 2.36),
    ("Qwen2.5-3B-Instruct", "transformers", False, 512, 8.88),
)


# ---------------------------------------------------------------------------------------------------------------
# Architecture


@dataclass(frozen=True)
class Arch:
    """The shape numbers memory depends on, read from a config.json."""
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    attention_bias: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> "Arch":
        cfg = cfg.get("text_config") or cfg  # multimodal wrappers keep the language model in text_config
        heads = cfg["num_attention_heads"]
        return cls(model_type=cfg.get("model_type", "?"), hidden=cfg["hidden_size"],
                   intermediate=cfg["intermediate_size"], layers=cfg["num_hidden_layers"], heads=heads,
                   kv_heads=cfg.get("num_key_value_heads") or heads,
                   head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, vocab=cfg["vocab_size"],
                   tied=bool(cfg.get("tie_word_embeddings", True)),
                   attention_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        per_layer = sum(a * b for a, b in self.linear_shapes().values())
        if self.attention_bias:
            per_layer += (self.heads + 2 * self.kv_heads) * self.head_dim
        return per_layer * self.layers

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def other_params(self) -> int:  # norms (incl. Qwen3/Gemma-3 q/k norms)
        return self.layers * (4 * self.hidden + 2 * self.head_dim) + self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.other_params

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        shapes = self.linear_shapes()
        return self.layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


def arch_of(name: str) -> Arch | None:
    """Architecture of a recipe's model.name, or None when this kit has no config for it."""
    if name == catalog.TINY:
        return Arch.from_config(dict(tiny.ARCH, model_type="llama", vocab_size=640 + len(tiny.TAGS)))  # BPE + tags
    path = catalog.config_path(name)
    if path is None:
        return None
    try:
        return Arch.from_config(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as e:
        raise KitError(f"{path}: not a usable model config ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------------------------
# What will run


@dataclass(frozen=True)
class Setup:
    """The choices memory depends on: from a kit.models.plan.Plan when there is one, else the recipe as written on a
    CUDA GPU with Unsloth (and vLLM where the recipe asks for it) installed."""
    backend: str
    load_in_4bit: bool
    fast_inference: bool
    act_bytes: int
    optim: str
    standby: bool

    @classmethod
    def of(cls, recipe: Recipe, plan=None) -> "Setup":
        standby = os.environ.get("UNSLOTH_VLLM_STANDBY", "1") != "0"  # kit.models.loading sets it to 1 unless told
        if plan is not None:
            act = 4 if plan.dtype == "float32" else 2
            # standby is Unsloth's: TRL's colocated engine (transformers backend) keeps its share while training
            return cls(plan.backend, plan.load_in_4bit, plan.fast_inference, act, plan.optim,
                       standby and plan.backend == "unsloth")
        m = recipe.model
        backend = "transformers" if m.backend == "transformers" or m.name == "builtin:tiny" else "unsloth"
        optim = "adamw_8bit" if recipe.grpo.optim == "auto" else recipe.grpo.optim
        act = 4 if m.dtype == "float32" else 2
        return cls(backend, m.load_in_4bit, m.fast_inference and backend == "unsloth", act, optim, standby)

    def describe(self) -> str:
        weights = "4-bit" if self.load_in_4bit else ("fp32" if self.act_bytes == 4 else "16-bit")
        gen = "vLLM" + (" standby" if self.standby else "") if self.fast_inference else "HF generation"
        return f"{self.backend}, {weights} weights, {gen}, {self.optim}"


# ---------------------------------------------------------------------------------------------------------------
# Estimate


@dataclass(frozen=True)
class Estimate:
    """Peak GPU memory of a GRPO step in GiB. `terms` are the peak phase's parts, biggest first (they sum to
    `total_gb`); `phases` the total of each phase; `reserved_gb` leaves the CUDA context out, which is what
    torch.cuda.max_memory_reserved() measures."""
    total_gb: float
    terms: tuple[tuple[str, float], ...]
    gpu_gb: float
    gpu_name: str
    phase: str
    phases: dict = field(default_factory=dict)
    setup: str = ""
    notes: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.gpu_gb

    @property
    def tight(self) -> bool:
        """Fits with less than 10% to spare: the estimate's own error is about that size."""
        return self.fits and self.total_gb > 0.9 * self.gpu_gb

    @property
    def reserved_gb(self) -> float:
        return self.total_gb - dict(self.terms).get(_CONTEXT, 0.0)

    @property
    def biggest(self) -> tuple[str, float]:
        return self.terms[0]


_CONTEXT = "CUDA context (outside PyTorch's allocator)"


def weight_bytes(arch: Arch, load_in_4bit: bool, act_bytes: int, backend: str) -> dict[str, float]:
    """Bytes of the frozen base weights: {"nf4": the 4-bit linear layers (0 when not 4-bit), "other": the rest}.
    Device-independent (benchmarks/fit_bytes.py measures them on a CPU)."""
    if not load_in_4bit:
        return {"nf4": 0.0, "other": float(arch.params * act_bytes)}
    # Measured on a CPU (benchmarks/fit_bytes.py): "nf4" within 0.5%. "other" is what Unsloth holds; the
    # transformers backend holds twice that, since PEFT's prepare_model_for_kbit_training (kit.models.loading) casts
    # every 16-bit parameter that is not 4-bit to fp32. Not counted yet: the H100 nf4 anchor (ANCHORS), which that
    # path measured, is already 8% under this estimate and would be 25% under with it; the terms that overshoot
    # (activations, logits) need a GPU to find. tests/test_fit_bytes.py holds the gap as an expected failure.
    return {"nf4": arch.linear_params * NF4_BYTES, "other": float((arch.embedding_params + arch.other_params) * 2)}


def lora_bytes(arch: Arch, rank: int, targets: tuple[str, ...], optim: str,
               full_modules: tuple[str, ...] = ()) -> dict[str, float]:
    """Bytes of what training adds: {"params", "grads", "optimizer"} for the LoRA tensors (+ `full_modules`,
    embed_tokens/lm_head trained in full). Device-independent (benchmarks/fit_bytes.py measures them)."""
    shapes = arch.linear_shapes()
    # one entry per trained tensor: LoRA's A (r x in) and B (out x r) of each target in each layer
    sizes = [rank * d for t in targets if t in shapes for d in shapes[t]] * arch.layers
    sizes += [arch.vocab * arch.hidden] * len(full_modules)
    n = sum(sizes)
    if optim == "adamw_torch":
        opt = 8.0 * n  # exp_avg + exp_avg_sq in fp32
    else:
        # bitsandbytes' 8-bit AdamW (TRL's adamw_8bit) keeps a tensor under its min_8bit_size (4096 elements) in
        # 32-bit states, 8 bytes per element: LoRA B of a narrow k/v projection (SmolLM2 at r16: 192 x 16) is
        # one, measured 11% over a flat 2 bytes/param. The others: two uint8 states + an fp32 absmax per
        # 256-element block for each (its quantile maps are shared by all tensors: a few KiB, left out).
        opt = float(sum(8 * k if k < BNB_MIN_8BIT else 2 * k + 2 * 4 * -(-k // 256) for k in sizes))
    return {"params": 4.0 * n, "grads": 4.0 * n, "optimizer": opt}


def estimate(recipe: Recipe, gpu_gb: float | None = None, plan=None, gpu_name: str | None = None) -> Estimate | None:
    """Peak VRAM of `recipe` on a GPU of `gpu_gb` GiB (default: this plan's GPU, else a 16 GB T4), or None when
    the architecture is unknown (no shipped config and not a local folder with a config.json)."""
    arch = arch_of(recipe.model.name)
    if arch is None:
        return None
    s = Setup.of(recipe, plan)
    if gpu_gb is None:
        cuda = plan is not None and plan.hardware.cuda
        gpu_gb = plan.hardware.total_gb if cuda else T4_GIB
        gpu_name = gpu_name or (plan.hardware.name if cuda else "16 GB GPU (T4)")
    gpu_name = gpu_name or f"{gpu_gb:g} GiB GPU"
    m, g = recipe.model, recipe.grpo
    b, ab = g.per_device_train_batch_size, s.act_bytes
    prompt, completion = g.max_prompt_length, g.max_completion_length
    seq = prompt + completion
    notes = []

    # Weights
    w = sum(weight_bytes(arch, s.load_in_4bit, ab, s.backend).values())
    if s.load_in_4bit:
        w_name = "base weights (4-bit nf4; embeddings and norms 16-bit)"
    else:
        w_name = f"base weights ({'fp32' if ab == 4 else '16-bit'})"
    weights = (w_name, w / GIB)

    # LoRA (+ fully trained modules)
    lora_n = arch.lora_params(m.lora_rank, m.lora_target_modules)
    full = tuple(mod for mod in m.modules_to_save if mod in ("embed_tokens", "lm_head"))
    lora = (f"LoRA r{m.lora_rank} ({lora_n / 1e6:.1f}M params): fp32 params + grads + {s.optim} states",
            sum(lora_bytes(arch, m.lora_rank, m.lora_target_modules, s.optim, full).values()) / GIB)

    # Training: logits and activations of one micro-batch
    logits = (f"logits: {b} completions x {completion + 1} tokens x {arch.vocab:,} vocab (16-bit)"
              if ab == 2 else f"logits: {b} x {completion + 1} tokens x {arch.vocab:,} vocab (fp32)",
              b * (completion + 1) * arch.vocab * ab / GIB)
    logits_terms = [logits]
    if s.backend == "unsloth":
        # Unsloth's GRPO loss (unsloth_zoo rl_replacements: grpo_accumulated_loss) takes hidden states from the
        # model (UNSLOTH_RETURN_HIDDEN_STATES), not logits, and computes the log-probs chunk by chunk
        # (chunked_hidden_states_selective_log_softmax: max(4, seq // 4096) chunks per completion, each cast to
        # fp32). Its backward holds the micro-batch's 16-bit logits plus one chunk in fp32 and that chunk's
        # gradient, and ends before the decoder layers are recomputed (Unsloth offloads their checkpoints to CPU
        # RAM): the logits and the recomputed layer peak one after the other, not together.
        chunk_rows = (completion + 1) / max(4, seq // 4096)
        logits_terms.append((f"log-softmax chunk: {chunk_rows:.0f} tokens x {arch.vocab:,} vocab in fp32 + its "
                             "gradient", chunk_rows * arch.vocab * 8 / GIB))
    q, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    per_token_layer = 4 * arch.hidden + 2 * q + 2 * kv + 4 * arch.intermediate
    layer = ("activations: one layer recomputed in the backward pass", b * seq * per_token_layer * ab / GIB)
    acts = [layer]
    if not m.gradient_checkpointing:
        acts = [(f"activations: all {arch.layers} layers kept for backward (no gradient checkpointing)",
                 arch.layers * b * seq * (per_token_layer + arch.hidden) * ab / GIB)]
    elif s.backend != "unsloth":
        acts.append((f"activations: checkpointed inputs of {arch.layers} layers ({b} x {seq} tokens)",
                     arch.layers * b * seq * arch.hidden * ab / GIB))
    slack = ("allocator slack (cuBLAS workspaces, fragmentation)", SLACK_GIB)
    context = (_CONTEXT, CONTEXT_GIB)
    if s.backend == "unsloth" and m.gradient_checkpointing:  # one after the other (above): the larger counts
        peak_part = max([logits_terms, acts], key=lambda part: sum(v for _, v in part))
    else:
        peak_part = [*logits_terms, *acts]
    train = [weights, lora, *peak_part, slack, context]

    # Generation
    gen_batch = b * (g.steps_per_generation or g.gradient_accumulation_steps)  # completions of one round
    if s.fast_inference:
        share = m.gpu_memory_utilization * gpu_gb
        vllm = (f"vLLM: gpu_memory_utilization {m.gpu_memory_utilization:g} x {gpu_gb:.1f} GiB (weights + KV cache)",
                share)
        gen = [vllm, lora, context]
        kv_need = gen_batch * seq * arch.layers * 2 * kv * ab / GIB
        if share < w / GIB + kv_need + 0.5:
            notes.append(f"model.gpu_memory_utilization {m.gpu_memory_utilization:g} leaves vLLM "
                         f"{share - w / GIB:.1f} GiB beside the weights; it needs ~{kv_need + 0.5:.1f} GiB for the KV "
                         f"cache of {gen_batch} sequences and its own activations: raise it")
        if s.standby:
            notes.append("UNSLOTH_VLLM_STANDBY: vLLM's KV cache is freed while training, so generation and "
                         "training peak separately")
        elif s.backend == "unsloth":  # vLLM holds its whole share (the weights in it are shared with training)
            train = [vllm, lora, *peak_part, slack, context]
            gen = train
        else:  # TRL's colocated engine: its own copy of the weights and its KV cache stay while training
            train = [weights, vllm, lora, *peak_part, slack, context]
            gen = train
    else:
        kv_cache = (f"KV cache: HF generation of {gen_batch} x {seq} tokens",
                    gen_batch * seq * arch.layers * 2 * kv * ab / GIB)
        gen = [weights, lora, kv_cache, slack, context]

    phases = {"training": sum(v for _, v in train), "generation": sum(v for _, v in gen)}
    phase = "training" if phases["training"] >= phases["generation"] else "generation"
    terms = tuple(sorted(train if phase == "training" else gen, key=lambda t: -t[1]))
    if s.act_bytes == 2 and arch.model_type.startswith("gemma3"):
        notes.append("Gemma-3 on a GPU without bfloat16 (T4) upcasts some activations to float32: allow ~10% more")
    if g.beta > 0:
        notes.append("grpo.beta > 0: the reference log-probs cost one more forward pass (memory about the same)")
    return Estimate(round(sum(v for _, v in terms), 3), terms, gpu_gb, gpu_name, phase,
                    {k: round(v, 3) for k, v in phases.items()}, s.describe(), tuple(notes))


# ---------------------------------------------------------------------------------------------------------------
# Advice


def suggest(recipe: Recipe, est: Estimate, plan=None, max_changes: int = 6) -> tuple[list[str], Estimate] | None:
    """The fewest overrides (cheapest in quality first) under which `recipe` fits `est`'s GPU, with the new
    estimate; None when nothing tried fits."""
    overrides: list[str] = []
    current, cur_est = recipe, est
    for _ in range(max_changes):
        change = _next_change(current, cur_est)
        if change is None:
            return None
        for item in change:  # a later value for the same key replaces the earlier one
            key = item.split("=", 1)[0]
            overrides = [o for o in overrides if o.split("=", 1)[0] != key] + [item]
        current = recipe_from_dict(apply_overrides(recipe_to_dict(recipe), overrides))
        cur_est = estimate(current, est.gpu_gb, plan, est.gpu_name)
        if cur_est.fits:
            return overrides, cur_est
    return None


def _next_change(r: Recipe, est: Estimate) -> list[str] | None:
    m, g = r.model, r.grpo
    if est.phase == "generation" and m.fast_inference and m.gpu_memory_utilization > 0.3:
        spare = est.total_gb - est.gpu_gb + 0.05 * est.gpu_gb
        gmu = max(0.3, round(m.gpu_memory_utilization - spare / est.gpu_gb - 0.05, 2))
        return [f"model.gpu_memory_utilization={gmu:g}"]
    b, ga, n = g.per_device_train_batch_size, g.gradient_accumulation_steps, g.num_generations
    if b % 2 == 0 and b > 1:  # same questions per step, half the logits and activations
        return [f"grpo.per_device_train_batch_size={b // 2}", f"grpo.gradient_accumulation_steps={ga * 2}"]
    if not m.gradient_checkpointing:
        return ["model.gradient_checkpointing=true"]
    if not m.load_in_4bit:
        return ["model.load_in_4bit=true"]
    if g.max_completion_length > 256:
        return [f"grpo.max_completion_length={max(256, (g.max_completion_length * 3 // 4) // 64 * 64)}"]
    if n > 4:
        n2 = n - 2
        b2 = max(d for d in range(1, n2 + 1) if n2 % d == 0 and d <= b)
        return [f"grpo.num_generations={n2}", f"grpo.per_device_train_batch_size={b2}",
                f"grpo.gradient_accumulation_steps={n2 // b2}"]
    return None


def warn_if_too_big(recipe: Recipe, plan) -> Estimate | None:
    """Print one warning line when the recipe is estimated not to fit the GPU it is about to run on (nothing on
    CPU or for an unknown architecture). Returns the estimate."""
    if not plan.hardware.cuda:
        return None
    est = estimate(recipe, plan=plan)
    if est is None or est.fits:
        return est
    name, gib = est.biggest
    hint = suggest(recipe, est, plan)
    fix = (" try " + " ".join(f"--set {o}" for o in hint[0]) + f" (est. {hint[1].total_gb:.1f} GiB)") if hint else \
        " no setting tried fits: use a smaller model"
    print(f"[kit] warning: estimated peak {est.total_gb:.1f} GiB > {plan.hardware.name} {est.gpu_gb:.1f} GiB; "
          f"biggest: {name} {gib:.1f} GiB;{fix}. `kit fit` on the recipe shows every term", flush=True)
    return est


# ---------------------------------------------------------------------------------------------------------------
# CLI


def cli(args) -> int:
    recipe = load_recipe(args.recipe, getattr(args, "overrides", []) or [])
    plan, note = None, ""
    if args.gpu_memory is not None:
        if args.gpu_memory <= 0:
            raise KitError(f"--gpu-memory: {args.gpu_memory:g} is not a GPU size; give GiB, e.g. --gpu-memory 24")
        gpu_gb, gpu_name = float(args.gpu_memory), "--gpu-memory"
    else:
        hw = detect_hardware()
        if hw.cuda:
            plan = make_plan(recipe, hw)
            gpu_gb, gpu_name = hw.total_gb, hw.name
        else:
            gpu_gb, gpu_name = T4_GIB, "16 GB GPU"
            note = (f"no CUDA GPU here: checking against a 16 GB GPU (a Colab T4 shows {T4_GIB} GiB to CUDA); "
                    "give another size with --gpu-memory GB")
    est = estimate(recipe, gpu_gb, plan, gpu_name)
    if est is None:
        raise KitError(f"model.name: no config for {recipe.model.name!r} in kit/models/configs/ and it is not a local "
                       "folder with a config.json, so its memory can't be estimated")
    print(f"recipe   {args.recipe}  ({recipe.model.name})")
    print(f"setup    {est.setup}" + ("" if plan else " (as the recipe asks, on a CUDA GPU with Unsloth)"))
    print(f"gpu      {gpu_gb:.1f} GiB ({gpu_name})")
    if note:
        print(f"note     {note}")
    print(f"\npeak during {est.phase} (training {est.phases['training']:.1f} GiB, generation "
          f"{est.phases['generation']:.1f} GiB):")
    width = max(len(n) for n, _ in est.terms)
    for name, gib in est.terms:
        print(f"  {name.ljust(width)}  {gib:6.2f} GiB")
    print(f"  {'total'.ljust(width)}  {est.total_gb:6.2f} GiB")
    for n in est.notes:
        print(f"note     {n}")
    if est.fits:
        spare = est.gpu_gb - est.total_gb
        print(f"\nfits in {est.gpu_gb:.1f} GiB ({spare:.1f} GiB to spare"
              + ("; tight: the estimate is good to about 10%)" if est.tight else ")"))
        return 0
    hint = suggest(recipe, est, plan)
    name, gib = est.biggest
    print(f"\ndoesn't fit in {est.gpu_gb:.1f} GiB (over by {est.total_gb - est.gpu_gb:.1f} GiB; biggest: {name})")
    if hint:
        changed = {o.split("=", 1)[0] for o in hint[0]}
        kept = [o for o in getattr(args, "overrides", []) or [] if o.split("=", 1)[0].strip() not in changed]
        print(f"change: kit train {args.recipe} " + " ".join(f"--set {o}" for o in kept + hint[0])
              + f"   (est. {hint[1].total_gb:.1f} GiB)")
    else:
        print("no change tried fits (micro-batch, completion length, G, 4-bit): use a smaller model or a bigger GPU")
    return 1


def table(recipes: list[Path], gpu_gb: float = T4_GIB) -> list[dict]:
    """The estimate of every recipe on one GPU size (docs/benchmarks.md is made from this)."""
    rows = []
    for path in recipes:
        r = load_recipe(path)
        est = estimate(r, gpu_gb)
        if est is None:
            continue
        rows.append({"recipe": path.stem, "model": r.model.name, "setup": est.setup, "total_gb": est.total_gb,
                     "training_gb": est.phases["training"], "generation_gb": est.phases["generation"],
                     "biggest": est.biggest[0], "fits": est.fits})
    return rows


