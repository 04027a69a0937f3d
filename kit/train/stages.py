"""The stages a recipe runs: SFT (the warm-up, and the fine-tuning half of rejection sampling) and GRPO, each a
TRL trainer configured from the recipe, fed from the task's data, logging into the run folder."""

from __future__ import annotations

import contextlib
import random

from kit import runs
from kit.errors import KitError
from kit.models import compat
from kit.models.engines import InProcessVLLM, attach_engine
from kit.models.stopping import stop_ids
from kit.recipe import Recipe
from kit.task import answers, data, rewards
from kit.train.log import say
from kit.train.preflight import point_logger
from kit.train.resume import train_stage
from kit.train.trl_args import common_args, grpo_config


def stage_callbacks(recipe, stage_name, tracker, stop, every_completions=0):
    from kit.train.callbacks import (  # imports transformers: only after the model (Unsloth first)
        CompletionsCallback,
        MetricsCallback,
        StopCallback,
    )

    offset = tracker.offset(stage_name)
    metrics_cb = MetricsCallback(tracker.metrics_writer(stage_name), stage_name, offset,
                                 on_step=lambda step: tracker.step(stage_name, step))
    completions_cb = CompletionsCallback(tracker.writer(tracker.run / runs.COMPLETIONS), stage_name, offset,
                                         every_completions)
    return [metrics_cb, completions_cb, StopCallback(stop)], completions_cb


@contextlib.contextmanager
def trainable_dtypes_kept(model, plan):
    """Build a TRL trainer inside this block: the trainable parameters keep the dtypes they had before it.

    TRL 1.x (SFTTrainer and GRPOTrainer, when the trainer is built) casts every trainable parameter of a quantized
    model to bfloat16, meant for LoRA on a GPU. It breaks a 4-bit run two ways: modules_to_save (a trained copy of
    embed_tokens / lm_head) in bfloat16 beside float32 hidden states fails the first forward ("expected m1 and m2 to
    have the same dtype"), and LoRA weights, their gradients and AdamW's state in bfloat16 are not the float32 LoRA
    that PEFT made (QLoRA computes in the plan's dtype; kit fit counts float32 LoRA). Put back here, before
    train() builds the optimizer. Unsloth's patched trainers own their dtypes: left alone."""
    before = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    yield
    if plan.backend != "transformers" or not plan.load_in_4bit:
        return
    for name, p in model.named_parameters():
        if name in before and p.dtype != before[name]:
            p.data = p.data.to(before[name])


def sft_dataset(recipe: Recipe, rows: list[dict]):
    """The warm-up's examples in TRL's conversational prompt-completion format: the recipe's system prompt and the
    question, then the target as an assistant turn, so TRL renders it through the chat template and the target
    ends with the template's turn-end token (the model learns to stop where its turn ends)."""
    from datasets import Dataset

    if "completion" not in rows[0]:  # worked solutions: rewrite them (rejection sampling brings its own)
        rng = random.Random(recipe.grpo.seed)
        rows = [dict(r, completion=answers.sft_target(r, layout=rng.random() < recipe.sft.format_fraction))
                for r in rows]
    return Dataset.from_list([{"prompt": data.to_prompt(r["question"], recipe.data.system_prompt),
                               "completion": [{"role": "assistant", "content": r["completion"]}]} for r in rows])


def run_sft(recipe, plan, model, tokenizer, rows, stage_dir, stage_name, tracker, stop):
    from trl import SFTConfig, SFTTrainer

    from kit.train.callbacks import (
        use_compact_progress,  # imports transformers: only after the model (Unsloth first)
    )

    s = recipe.sft
    ds = sft_dataset(recipe, rows)
    out = stage_dir / "checkpoints"
    args = SFTConfig(**common_args(recipe, plan, out), max_steps=s.max_steps, learning_rate=s.learning_rate,
                     per_device_train_batch_size=s.per_device_train_batch_size,
                     gradient_accumulation_steps=s.gradient_accumulation_steps, logging_steps=1,
                     save_steps=max(s.max_steps // 2, 1), lr_scheduler_type="cosine", **compat.warmup(SFTConfig, 0.05),
                     max_length=recipe.model.max_seq_length, completion_only_loss=True, packing=False)
    callbacks, _ = stage_callbacks(recipe, stage_name, tracker, stop)
    point_logger(recipe, tracker.run, stage_name)
    with trainable_dtypes_kept(model, plan):
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                             callbacks=callbacks)
    use_compact_progress(trainer)
    say(f"{stage_name}: supervised fine-tuning on {len(ds)} examples, {s.max_steps} steps")
    tracker.update(phase=f"{stage_name}: training")
    train_stage(trainer, model, out, stage_name, tracker, s.max_steps)


def grpo_dataset(recipe: Recipe, tokenizer):
    """GRPO prompts in TRL's conversational format with the gold `answer` column; prompts longer than
    grpo.max_prompt_length are dropped (TRL 1.x has no max_prompt_length). Where TRL cannot pass the recipe's chat
    template arguments (kit.models.compat.render_prompts), the prompt is the rendered text instead of the messages."""
    from datasets import Dataset

    rows = data.questions(recipe.data, recipe.data.split, recipe.data.limit, recipe.grpo.seed)
    kept, render = [], compat.render_prompts(data.template_kwargs(recipe.data))
    for r in rows:
        prompt = data.to_prompt(r["question"], recipe.data.system_prompt)
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True,
                                             **data.template_kwargs(recipe.data))
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= recipe.grpo.max_prompt_length:
            kept.append({"prompt": text if render else prompt, "answer": r["answer"], "question": r["question"]})
    dropped = len(rows) - len(kept)
    if not kept:
        raise KitError(f"grpo.max_prompt_length: all {len(rows)} prompts are longer than "
                       f"{recipe.grpo.max_prompt_length} tokens; raise it")
    if dropped:
        say(f"data: dropped {dropped} of {len(rows)} questions longer than grpo.max_prompt_length "
             f"({recipe.grpo.max_prompt_length} tokens)")
    return Dataset.from_list(kept)


def run_grpo(recipe, plan, model, tokenizer, stage_dir, stage_name, tracker, stop):
    from trl import GRPOTrainer

    from kit.train.callbacks import (  # imports transformers: only after the model (Unsloth first)
        EvalCallback,
        use_compact_progress,
    )

    g = recipe.grpo
    ds = grpo_dataset(recipe, tokenizer)
    args = grpo_config(recipe, plan, stage_dir / "checkpoints", stop_ids(model, tokenizer))
    callbacks, completions_cb = stage_callbacks(recipe, stage_name, tracker, stop, g.completions_every)
    if recipe.eval.every_steps:
        callbacks.append(EvalCallback(recipe, tokenizer, tracker.metrics_writer(stage_name), stage_name,
                                      tracker.offset(stage_name), scratch=str(stage_dir / "eval_lora")))
    point_logger(recipe, tracker.run, stage_name)
    with trainable_dtypes_kept(model, plan):
        trainer = GRPOTrainer(model=model, reward_funcs=rewards.reward_functions(recipe), args=args,
                              train_dataset=ds, processing_class=tokenizer, callbacks=callbacks)
    completions_cb.trainer = trainer
    if args.use_vllm and args.vllm_mode == "colocate" and plan.backend == "transformers":
        # evaluation during training (and later rejection sampling) answer through the same engine
        attach_engine(model, InProcessVLLM, llm=trainer.vllm_generation.llm,
                      name="vLLM (TRL's colocated engine, weights synced)")
        say("rollouts, evaluation during training and rejection sampling generate with TRL's colocated vLLM engine")
    use_compact_progress(trainer)
    say(f"{stage_name}: GRPO on {len(ds)} questions, {g.max_steps} steps, {g.num_generations} answers per "
        f"question, rewards {', '.join(f'{r.function} x{r.weight:g}' for r in recipe.rewards)}")
    if plan.backend == "unsloth":
        say("Unsloth compiles its kernels during the first step: expect a few minutes (about 3 on an H100) "
             "before step 1 is logged. It is not hung.")
        tracker.update(phase=f"{stage_name}: compiling (first step takes minutes)")
    else:
        tracker.update(phase=f"{stage_name}: training")
    train_stage(trainer, model, stage_dir / "checkpoints", stage_name, tracker, g.max_steps)
    if "ref" in getattr(model, "peft_config", {}):
        # TRL's frozen copy of the stage's starting adapter, its KL reference when beta > 0: this stage's alone. Left
        # in, it would be saved with the adapters and make the next beta > 0 GRPO stage fail ("already exists").
        model.delete_adapter("ref")
