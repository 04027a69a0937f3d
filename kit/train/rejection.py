"""Rejection sampling: k answers per question from the model being trained, keep the correct ones (and the
judge's), de-duplicate; the kept answers are the next SFT stage's data."""

from __future__ import annotations

import os
import time

from kit.errors import KitError
from kit.models.engines import (
    Generator,
    InProcessVLLM,
    attach_engine,
    attached_engine,
    start_vllm,
)
from kit.models.loading import load_for_inference
from kit.recipe import StageSpec, load_recipe, recipe_from_dict
from kit.runs import metrics
from kit.task import data
from kit.task.rewards import correctness_reward
from kit.train import killpoints
from kit.train.log import say
from kit.train.resume import resume_checkpoint


def rejection_sample(recipe, plan, stage, model, tokenizer, stage_dir, tracker) -> list[dict]:
    import torch

    kept_path = stage_dir / "kept.jsonl"
    if kept_path.is_file() and resume_checkpoint(stage_dir / "checkpoints", set_aside=False):
        # resuming its fine-tuning: the same rows (the trainer skips the batches it has seen), not a new draw
        kept = metrics.read_jsonl(kept_path)
        say(f"{stage_dir.name}: continuing the fine-tuning on the {len(kept)} answers kept before ({kept_path})")
        return kept
    rows = data.questions(recipe.data, recipe.data.split, stage.questions, recipe.grpo.seed + 1)
    tracker.update(phase=f"{stage_dir.name}: sampling {stage.samples_per_question} answers x {len(rows)} "
                         "questions")
    say(f"{stage_dir.name}: sampling {stage.samples_per_question} answers for each of {len(rows)} questions")
    sampling_engine(recipe, plan, stage, model)
    gen = Generator.of_training_model(model, tokenizer, stage_dir / "sampling_lora",
                                      data.template_kwargs(recipe.data))
    say(f"{stage_dir.name}: answers from {gen.engine_name}")
    prompts = [data.to_prompt(r["question"], recipe.data.system_prompt) for r in rows]
    from tqdm.auto import tqdm

    def on_batch(n: int) -> None:
        bar.update(n)
        killpoints.reached("sampling", stage_dir.name)

    # HF sampling draws from torch's generator: seeded, so a stage that starts again after a kill draws the same
    # answers as an uninterrupted run (vLLM takes the seed itself)
    with tqdm(total=len(prompts), desc="sampling", unit="q") as bar, torch.random.fork_rng():
        torch.manual_seed(recipe.grpo.seed)
        answers = gen.generate(prompts, recipe.grpo.max_completion_length, temperature=recipe.grpo.temperature,
                               top_p=recipe.grpo.top_p, n=stage.samples_per_question, on_batch=on_batch,
                               seed=recipe.grpo.seed)
    judge = load_judge(stage) if stage.judge else None
    kept, n_correct = filter_answers(rows, answers, judge, stage.judge_prompt)
    total = len(rows) * stage.samples_per_question
    tracker.metrics_writer(stage_dir.name).write({
        "step": 0, "run_step": tracker.offset(stage_dir.name), "time": round(time.time(), 3),
        "stage": stage_dir.name, "rejection/sampled": total, "rejection/correct_rate": n_correct / total,
        "rejection/kept": len(kept)})
    say(f"{stage_dir.name}: {n_correct}/{total} sampled answers correct, {len(kept)} kept after de-duplication"
        + (" and the judge" if judge else ""))
    if not kept:
        why = ("the judge approved none of the correct ones" if n_correct else "no sampled answer was correct")
        raise KitError(f"{stage_dir.name}: {why}, so there is nothing to fine-tune on; train longer first (an "
                       "earlier sft/grpo stage), raise samples_per_question" + (", or drop the judge" if n_correct
                                                                                 else ""))
    if tracker.main:  # whole or not at all: a resume continues from it
        tmp = kept_path.with_suffix(".jsonl.tmp")
        tmp.unlink(missing_ok=True)
        kept_writer = metrics.JsonlWriter(tmp)
        for row in kept:
            kept_writer.write(row)
        os.replace(tmp, kept_path)
    return kept


def sampling_engine(recipe, plan, stage, model) -> None:
    """Transformers backend with vLLM: sample through the engine of an earlier GRPO stage, else start one, unless a
    GRPO stage follows (TRL starts its own engine there, and two engines would share one GPU)."""

    if not (plan.fast_inference and plan.backend == "transformers") or attached_engine(model) is not None:
        return
    stages = list(recipe.pipeline())
    if any(s.kind == "grpo" for s in stages[stages.index(stage) + 1:]):
        say("rejection sampling generates with HF: a GRPO stage follows, and its vLLM engine would be a second one")
        return
    attach_engine(model, InProcessVLLM, llm=start_vllm(recipe.model, plan),
                  name="vLLM (in-process engine, weights synced)")


def filter_answers(rows: list[dict], answers: list[list[str]], judge=None, judge_prompt: str = "") -> tuple[list, int]:
    """Keep the sampled answers `correctness_reward` accepts, once each (whitespace ignored), that the judge (if
    any) approves. Returns (kept rows, number of correct samples before de-duplication and judging)."""

    kept, seen, n_correct = [], set(), 0
    for row, texts in zip(rows, answers, strict=True):
        for text in texts:
            if correctness_reward([text], answer=[row["answer"]])[0] != 1.0:
                continue
            n_correct += 1
            key = (row["question"], " ".join(text.split()))
            if key in seen:
                continue
            seen.add(key)
            if judge is not None and not judge(row["question"], text, judge_prompt):
                continue
            kept.append({"question": row["question"], "answer": row["answer"], "completion": text.strip()})
    return kept, n_correct


def load_judge(stage: StageSpec):
    """An LLM-as-judge: approves an answer when its reply starts with YES."""
    if stage.judge.endswith((".yaml", ".yml")):  # a recipe: its model section says how to load the judge

        judge_recipe = load_recipe(stage.judge)
    else:
        judge_recipe = recipe_from_dict({"model": {"name": stage.judge, "load_in_4bit": True,
                                                   "fast_inference": False}})
    _, _, engine = load_for_inference(judge_recipe, adapter=None)
    gen = Generator(engine)

    def approve(question: str, completion: str, prompt: str) -> bool:
        text = prompt.format(question=question, completion=completion)
        reply = gen.generate([[{"role": "user", "content": text}]], max_new_tokens=4)[0][0]
        return reply.strip().upper().startswith("YES")

    return approve
