"""TRL's arguments for a recipe on this machine's plan: the one place recipe fields meet TRL's names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kit.models import compat
from kit.models.plan import Plan
from kit.recipe import GRPOSpec, Recipe
from kit.task import data

# grpo fields named as GRPOConfig names them, passed only when set away from their defaults (TRL 1.14's own): a
# recipe that leaves them alone trains exactly as before, and still runs on a TRL that lacks some (profile t4).
OPTIONAL_ARGS = ("importance_sampling_level", "epsilon_high", "delta", "num_iterations", "steps_per_generation",
                 "top_entropy_quantile", "off_policy_mask_threshold", "multi_objective_aggregation", "top_k",
                 "min_p", "repetition_penalty", "vllm_importance_sampling_correction",
                 "vllm_importance_sampling_mode", "vllm_importance_sampling_clip_max",
                 "vllm_importance_sampling_clip_min")

# grpo fields of the kit's own, not TRL arguments
KIT_ONLY = ("algorithm", "trl_args", "completions_every")

# GRPOConfig arguments that other recipe fields set (grpo.trl_args refuses them, naming the field) ...
FROM_RECIPE = {
    "warmup_steps": "grpo.warmup_ratio", "data_seed": "grpo.seed", "report_to": "run.report_to",
    "chat_template_kwargs": "data.enable_thinking", "use_vllm": "model.fast_inference",
    "vllm_mode": "model.fast_inference / model.vllm_server", "vllm_server_base_url": "model.vllm_server",
    "vllm_gpu_memory_utilization": "model.gpu_memory_utilization", "vllm_max_model_length": "model.max_seq_length",
    "vllm_importance_sampling_cap": "grpo.vllm_importance_sampling_clip_max",  # TRL 1.14's deprecated name
    "gradient_checkpointing": "model.gradient_checkpointing",
    "gradient_checkpointing_kwargs": "model.gradient_checkpointing", "reward_weights": "rewards (their weights)",
    "log_completions": "grpo.completions_every", "eval_strategy": "eval.every_steps", "eval_steps":
    "eval.every_steps", "do_eval": "eval.every_steps",
}
# ... and those the kit sets from its plan (vllm_*, save_* and logging_* as families)
FROM_PLAN = ("output_dir", "use_cpu", "bf16", "fp16", "dataloader_num_workers", "disable_tqdm", "shuffle_dataset",
             "generation_kwargs", "model_init_kwargs", "resume_from_checkpoint")
FROM_PLAN_PREFIXES = ("vllm_", "save_", "logging_")


def common_args(recipe: Recipe, plan: Plan, out: Path) -> dict:
    g = recipe.grpo
    return dict(
        output_dir=str(out), use_cpu=not plan.hardware.cuda, bf16=plan.dtype == "bfloat16",
        fp16=plan.dtype == "float16", gradient_checkpointing=False,  # set up by kit.models.loading (Unsloth's or PEFT's)
        optim=plan.optim, seed=g.seed, data_seed=g.seed, report_to=recipe.run.report_to, save_strategy="steps",
        save_total_limit=2, logging_first_step=True, dataloader_num_workers=0, disable_tqdm=False,
    )


def optional_args(g: GRPOSpec) -> dict:
    """The OPTIONAL_ARGS this recipe sets away from their defaults, by TRL's names."""
    defaults = GRPOSpec()
    return {name: getattr(g, name) for name in OPTIONAL_ARGS if getattr(g, name) != getattr(defaults, name)}


def reserved(name: str) -> str | None:
    """Why grpo.trl_args may not set the GRPOConfig argument `name` (a recipe field or the plan sets it), or None."""
    if name in {f.name for f in dataclasses.fields(GRPOSpec)} - set(KIT_ONLY):
        return f"use the recipe field grpo.{name}"
    if name in FROM_RECIPE:
        return f"use the recipe field {FROM_RECIPE[name]}"
    if name in FROM_PLAN or name.startswith(FROM_PLAN_PREFIXES):
        return "the kit sets it from its plan"
    return None


def vllm_correction(recipe: Recipe, plan: Plan) -> bool:
    """Whether TRL corrects for vLLM's sampling, and so keeps old log-probs even on-policy: it generates with vLLM,
    the recipe leaves grpo.vllm_importance_sampling_correction on, and this TRL has the correction."""
    if not ((plan.fast_inference or recipe.model.vllm_server) and recipe.grpo.vllm_importance_sampling_correction):
        return False
    from trl import GRPOConfig

    return compat.grpo_takes(GRPOConfig, "vllm_importance_sampling_correction", True)


def grpo_config(recipe: Recipe, plan: Plan, out: Path, stop_ids: list[int] | None = None):
    """TRL's GRPOConfig for a recipe on this machine's plan (`grpo_args` are its arguments)."""
    from trl import GRPOConfig

    return GRPOConfig(**grpo_args(recipe, plan, out, stop_ids))


def grpo_args(recipe: Recipe, plan: Plan, out: Path, stop_ids: list[int] | None = None) -> dict:
    """GRPOConfig's arguments for a recipe on this machine's plan: the one place recipe fields meet TRL's names.

    `stop_ids` (kit.models.stopping.stop_ids of the loaded model): vLLM rollouts stop at every one of them. HF rollouts
    need nothing here: TRL stops them, and cuts the completion mask, at `tokenizer.eos_token_id`, which
    kit.models.stopping.prepare made the turn-end token. grpo.trl_args come last, as given (the preflight checked
    their names; one that clashes with an argument here is a TypeError, not a silent override)."""
    from trl import GRPOConfig

    g = recipe.grpo
    m = recipe.model
    vllm = {"use_vllm": plan.fast_inference}  # Unsloth's patched trainer generates with its own vLLM engine
    if stop_ids and (plan.fast_inference or m.vllm_server):
        vllm["generation_kwargs"] = {"stop_token_ids": list(stop_ids)}  # TRL hands these to SamplingParams
    if plan.fast_inference and plan.backend == "transformers":  # TRL's own engine, in this process
        vllm.update(vllm_mode="colocate", vllm_gpu_memory_utilization=m.gpu_memory_utilization,
                    **compat.vllm_max_model_length(GRPOConfig, m.max_seq_length))  # no sleep mode: CUDA-only
    if m.vllm_server:  # multi-GPU: TRL generates on a separate `trl vllm-serve` process
        vllm.update(use_vllm=True, vllm_mode="server", vllm_server_base_url=m.vllm_server)
    return dict(
        **common_args(recipe, plan, out), **vllm,
        num_generations=g.num_generations, per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps, max_completion_length=g.max_completion_length,
        learning_rate=g.learning_rate, beta=g.beta, epsilon=g.epsilon, loss_type=g.loss_type,
        scale_rewards=g.scale_rewards, temperature=g.temperature, top_p=g.top_p, max_steps=g.max_steps,
        lr_scheduler_type=g.lr_scheduler_type, **compat.warmup(GRPOConfig, g.warmup_ratio),
        weight_decay=g.weight_decay,
        max_grad_norm=g.max_grad_norm, mask_truncated_completions=g.mask_truncated_completions,
        logging_steps=g.logging_steps, save_steps=g.save_steps,
        reward_weights=[r.weight for r in recipe.rewards],
        log_completions=False, shuffle_dataset=True,
        **compat.grpo_prompt_args(GRPOConfig, g.max_prompt_length, data.template_kwargs(recipe.data)),
        **optional_args(g), **g.trl_args,
    )
