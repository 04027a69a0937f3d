"""TRL's arguments for a recipe on this machine's plan: the one place recipe fields meet TRL's names."""

from __future__ import annotations

from pathlib import Path

from kit.models import compat
from kit.models.plan import Plan
from kit.recipe import Recipe
from kit.task import data


def common_args(recipe: Recipe, plan: Plan, out: Path) -> dict:
    g = recipe.grpo
    return dict(
        output_dir=str(out), use_cpu=not plan.hardware.cuda, bf16=plan.dtype == "bfloat16",
        fp16=plan.dtype == "float16", gradient_checkpointing=False,  # set up by kit.models.loading (Unsloth's or PEFT's)
        optim=plan.optim, seed=g.seed, data_seed=g.seed, report_to=recipe.run.report_to, save_strategy="steps",
        save_total_limit=2, logging_first_step=True, dataloader_num_workers=0, disable_tqdm=False,
    )


def grpo_config(recipe: Recipe, plan: Plan, out: Path, stop_ids: list[int] | None = None):
    """TRL's GRPOConfig for a recipe on this machine's plan: the one place recipe fields meet TRL's names.

    `stop_ids` (kit.models.stopping.stop_ids of the loaded model): vLLM rollouts stop at every one of them. HF rollouts
    need nothing here: TRL stops them, and cuts the completion mask, at `tokenizer.eos_token_id`, which
    kit.models.stopping.prepare made the turn-end token."""
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
    return GRPOConfig(
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
    )
