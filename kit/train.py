"""One training flow, top to bottom: recipe -> plan -> run folder -> model -> data -> stages (SFT / GRPO /
rejection-sampling SFT) -> save.

    kit train recipes/demo.yaml --set grpo.max_steps=20

Everything the run produces lands in its run folder (see kit/runs.py); trl/transformers are imported only after
kit.model has loaded the model, so Unsloth (when used) is imported first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import socket
import threading
import time
import traceback
from pathlib import Path

from kit import compat, data, killpoints, metrics, rewards, runs
from kit import model as kit_model
from kit import recipe as kit_recipe
from kit.recipe import KitError, Recipe, StageSpec, load_recipe, save_recipe
from kit.rewards import RewardError


def train(recipe_path: str | Path | None = None, overrides: list[str] = (), resume: str | Path | None = None,
          run_dir: str | Path | None = None) -> Path:
    """Run a recipe (or resume a run folder) and return the run folder. `run_dir` names the folder to create
    (the app chooses it so it can put train.log inside); by default it is <run.output_dir>/<name>-<timestamp>."""
    # --- Recipe and plan: every check that needs no model happens here -------------------------------------
    if resume is not None:
        run = runs.open_run(resume)
        if runs.status(run) == "running" and int(os.environ.get("RANK", 0)) == 0:
            raise KitError(_still_training(run))
        saved = load_recipe(run / runs.RECIPE)
        recipe = load_recipe(run / runs.RECIPE, overrides)
        _check_resume(run, saved, recipe)
    else:
        recipe = load_recipe(recipe_path, overrides)
    plan = kit_model.plan(recipe)
    if recipe.model.vllm_server:  # before anything loads: the server must be up
        kit_model.check_vllm_server(recipe.model.vllm_server)
    _say(f"recipe {recipe.run.name}: {recipe.model.name} | backend {plan.backend} | "
         f"{'4-bit' if plan.load_in_4bit else plan.dtype} | {'vLLM' if plan.fast_inference else 'HF'} generation "
         f"| {plan.hardware.name}")
    for note in [*plan.notes, *kit_recipe.ineffective_overrides(recipe, overrides)]:
        _say(note)
    from kit.fit import warn_if_too_big  # no torch: arithmetic on the shipped config

    warn_if_too_big(recipe, plan)
    _check_task(recipe)
    # --- Run folder --------------------------------------------------------------------------------------------
    # Under `accelerate launch` every process runs this flow; only the main one writes the run folder.
    main = int(os.environ.get("RANK", 0)) == 0
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        if resume is None and run_dir is None:
            raise KitError("multi-process launch: pass --run-dir DIR so every process uses the same run folder")
        _say(f"distributed: world size {world}, rank {os.environ.get('RANK')}")
    if resume is None and run_dir is not None:
        run = Path(run_dir)
        if main and (run / runs.RECIPE).exists():
            raise KitError(f"{run} is already a run folder; continue it with --resume {run}")
        run.mkdir(parents=True, exist_ok=True)
    elif resume is None:
        run = runs.new_run_dir(recipe.run.output_dir, recipe.run.name)
    if main:
        recipe = _keep_reward_files(recipe, run)
    killpoints.install(run)  # test-only (KIT_TEST_KILL_AT); nothing without it
    tracker = Tracker(run, recipe, plan, resumed=resume is not None, main=main)
    _say(f"run folder: {run}")

    from kit.callbacks import StopFlag  # transformers import: after the plan, before the model

    stop = StopFlag().install()
    try:
        # --- Model -------------------------------------------------------------------------------------------
        tracker.update(phase="loading model")
        model, tokenizer = kit_model.load(recipe, plan, seed=recipe.grpo.seed)
        _say(f"model loaded: {_count_params(model)}")

        # --- Stages ------------------------------------------------------------------------------------------
        previous_adapter = None
        for index, stage in enumerate(recipe.pipeline()):
            if stop.requested:
                break
            name = f"{index + 1}-{stage.kind}"
            stage_dir = run / runs.STAGES / name
            if tracker.stage_status(name) == "finished":
                previous_adapter = stage_dir / runs.ADAPTER
                continue
            if previous_adapter is not None:  # resuming after finished stages: continue from their adapter
                kit_model.load_adapter_weights(model, previous_adapter)
                previous_adapter = None
            stage_recipe = _stage_recipe(recipe, stage)
            stage_dir.mkdir(parents=True, exist_ok=True)
            if main:
                save_recipe(stage_recipe, stage_dir / runs.RECIPE)
            tracker.start_stage(name, stage)
            if stage.kind == "sft":
                rows = data.questions(recipe.data, recipe.data.split, recipe.sft.limit, recipe.grpo.seed)
                _run_sft(stage_recipe, plan, model, tokenizer, rows, stage_dir, name, tracker, stop)
            elif stage.kind == "rejection_sft":
                rows = _rejection_sample(stage_recipe, stage, model, tokenizer, stage_dir, tracker)
                _run_sft(stage_recipe, plan, model, tokenizer, rows, stage_dir, name, tracker, stop)
            else:
                _run_grpo(stage_recipe, plan, model, tokenizer, stage_dir, name, tracker, stop)
            if main:
                model.save_pretrained(stage_dir / runs.ADAPTER)
                tokenizer.save_pretrained(stage_dir / runs.ADAPTER)
            tracker.end_stage(name, "stopped" if stop.requested else "finished")

        if previous_adapter is not None:  # every remaining stage had finished: keep their adapter
            kit_model.load_adapter_weights(model, previous_adapter)

        # --- Save ----------------------------------------------------------------------------------------------
        tracker.update(phase="saving adapter")
        if main:
            model.save_pretrained(run / runs.ADAPTER)
            tokenizer.save_pretrained(run / runs.ADAPTER)
        if stop.requested:
            tracker.finish("stopped", f"stopped by {stop.signal_name}; continue with: kit train --resume {run}")
        else:
            tracker.finish("finished")
    except RewardError as e:  # a reward crashed mid-run: its name and the completion that broke it
        if e.trace:
            (run / "error.log").write_text(e.trace)
        tracker.summary["reward_failure"] = {"reward": e.reward, "completion": e.completion, "error": e.error}
        tracker.finish("failed", str(e))
        raise
    except KitError as e:
        if e.__cause__ is not None:  # a library failure the kit explained (e.g. vLLM not starting): keep its trace
            (run / "error.log").write_text("".join(traceback.format_exception(e.__cause__)))
        tracker.finish("failed", str(e))
        raise
    except KeyboardInterrupt:
        tracker.finish("stopped", "interrupted (second Ctrl-C): the last checkpoint is kept")
        raise
    except Exception as e:
        with contextlib.suppress(OSError):  # a full disk may not take the traceback either
            (run / "error.log").write_text(traceback.format_exc())
        message = _explain(e, run)
        tracker.finish("failed", message)
        raise KitError(f"training failed: {message} (traceback: {run / 'error.log'})") from None
    _say(f"{tracker.summary['status']}: {run}")
    return run


def _still_training(run: Path) -> str:
    """Why --resume refuses a run that reads as running: here, its live process; elsewhere (a Colab session's run on
    Drive), its heartbeat, which stops with its machine."""
    s = runs.read_summary(run)
    if s.get("host") == os.uname().nodename:
        return f"{run} is still training (pid {s.get('pid')}); stop it before resuming"
    age = time.time() - (runs.last_beat(run) or time.time())
    wait = max(0, 3 * runs.HEARTBEAT_S - age)
    return (f"{run} is still training on {s.get('host')} (its heartbeat is {age:.0f} s old); stop it there, or, if "
            f"that machine or session is gone, resume in {wait:.0f} s, when its heartbeat has stopped")


def _check_resume(run: Path, saved: Recipe, recipe: Recipe) -> None:
    """Overrides on --resume may lengthen training or change logging, not what the checkpoints were trained as."""
    for section in ("model", "data", "rewards", "stages"):
        if getattr(saved, section) != getattr(recipe, section):
            raise KitError(f"--resume: {section} cannot change on resume (the checkpoints in {run} were trained "
                           f"with the saved one); start a new run with `kit train {run / runs.RECIPE} --set ...`")
    stages = runs.read_summary(run).get("stages", [])
    for i, (stage, before) in enumerate(zip(recipe.pipeline(), stages)):
        wanted = recipe.stage_steps(stage)
        done = before.get("steps", 0)
        if before.get("status") != "finished" or wanted == done:
            continue
        # A finished stage can only grow, from its final checkpoint, and only while no later stage built on it.
        later = [s["name"] for s in stages[i + 1:] if s.get("status") != "pending"]
        if later:
            why = f"{', '.join(later)} already trained on its result"
        elif wanted < done:
            why = "a finished stage cannot be shortened"
        elif not _resume_checkpoint(run / runs.STAGES / before["name"] / "checkpoints", set_aside=False):
            why = "it kept no checkpoint to continue from"
        else:
            continue
        raise KitError(f"--resume: stage {before['name']} finished after {done} steps and cannot be set to "
                       f"{wanted} ({why}); start a new run for a different length")


def _stage_recipe(recipe: Recipe, stage: StageSpec) -> Recipe:
    """The recipe a stage runs with: the stage's max_steps / learning_rate replace its section's."""
    section = "grpo" if stage.kind == "grpo" else "sft"
    changes = {k: v for k, v in (("max_steps", stage.max_steps), ("learning_rate", stage.learning_rate))
               if v is not None}
    if not changes:
        return recipe
    return dataclasses.replace(recipe, **{section: dataclasses.replace(getattr(recipe, section), **changes)})


# ---------------------------------------------------------------------------------------------------------------
# The task (data, rewards, logger) checked before any model loads; reward files kept in the run folder

LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",),
                   "mlflow": ("mlflow",)}


def _check_task(recipe: Recipe) -> None:
    """Read the task's rows (missing fields and unparseable gold answers fail here), call every reward once on
    sample completions of one of them, and find the experiment logger's package: one-line errors, no model yet."""
    import importlib.util

    splits = [recipe.data.split] + ([recipe.eval.split] if recipe.eval.every_steps else [])
    rows = [data.questions(recipe.data, split, 1, recipe.grpo.seed) for split in dict.fromkeys(splits)]
    rewards.check_rewards(recipe, rows[0][0])
    packages = LOGGER_PACKAGES.get(recipe.run.report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise KitError(f"run.report_to={recipe.run.report_to}: the {packages[0]} package is not installed; "
                       f"pip install {packages[0]} (or run.report_to=none)")


def _keep_reward_files(recipe: Recipe, run: Path) -> Recipe:
    """Copy every reward file into RUN/rewards/ and save the resolved recipe pointing at the copies (relative to the
    run folder), so the run says what it was trained with and --resume runs the same code. Returns the recipe the
    run trains with: the same, reading the copies."""
    import shutil

    folder = run / "rewards"
    saved, used = [], []
    for r in recipe.rewards:
        path, _, func = r.name.rpartition(":")
        if not (rewards.is_user_reward(r.name) and path.endswith(".py")):
            saved.append(r)
            used.append(r)
            continue
        copy = folder / Path(path).name
        if Path(path).resolve() != copy.resolve():
            folder.mkdir(exist_ok=True)
            if copy.exists() and copy.read_bytes() != Path(path).read_bytes():  # two files of one name
                copy = folder / f"{Path(path).stem}-{len(list(folder.iterdir()))}.py"
            shutil.copy2(path, copy)
        saved.append(dataclasses.replace(r, name=f"rewards/{copy.name}:{func}"))
        used.append(dataclasses.replace(r, name=f"{copy.resolve()}:{func}"))
    save_recipe(dataclasses.replace(recipe, rewards=tuple(saved)), run / runs.RECIPE)
    return dataclasses.replace(recipe, rewards=tuple(used))


def _point_logger(recipe: Recipe, run: Path, stage_name: str) -> None:
    """Experiment loggers write inside the run folder. This transformers has no logging_dir argument: TensorBoard's
    callback reads TENSORBOARD_LOGGING_DIR when the trainer is built. A user's own W&B / MLflow settings win."""
    if recipe.run.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tensorboard" / stage_name)
    elif recipe.run.report_to == "wandb":
        os.environ.setdefault("WANDB_DIR", str(run))
        os.environ.setdefault("WANDB_PROJECT", "grpo-kit")
    elif recipe.run.report_to == "mlflow":
        os.environ.setdefault("MLFLOW_TRACKING_URI", (run / "mlruns").resolve().as_uri())


# ---------------------------------------------------------------------------------------------------------------
# Trainer arguments shared by both trainers


def _common_args(recipe: Recipe, plan: kit_model.Plan, out: Path) -> dict:
    g = recipe.grpo
    return dict(
        output_dir=str(out), use_cpu=not plan.hardware.cuda, bf16=plan.dtype == "bfloat16",
        fp16=plan.dtype == "float16", gradient_checkpointing=False,  # set up by kit.model (Unsloth's or PEFT's)
        optim=plan.optim, seed=g.seed, data_seed=g.seed, report_to=recipe.run.report_to, save_strategy="steps",
        save_total_limit=2, logging_first_step=True, dataloader_num_workers=0, disable_tqdm=False,
    )


def _resume_checkpoint(out: Path, set_aside: bool = True) -> str | None:
    """The newest complete checkpoint in `out` (kit.runs.checkpoint_problem says what complete means), else None.
    Torn ones (a kill or a full disk while transformers wrote them) are skipped, and with `set_aside` (the main
    process) moved into out/torn/ with one line each, so transformers neither resumes nor rotates from them."""
    found = None
    for ckpt in reversed(runs.checkpoints(out)):
        problem = runs.checkpoint_problem(ckpt)
        if problem is None:
            found = found or str(ckpt)
        elif set_aside:
            where = runs.set_aside(ckpt)
            _say(f"{ckpt} is torn ({problem}): skipped, kept as {where}")
    return found


def _train_stage(trainer, model, out: Path, stage_name: str, tracker: "Tracker", max_steps: int) -> None:
    """trainer.train(), from the stage's newest complete checkpoint if it has one; a stage that had trained steps
    but kept none complete says that it starts again. A checkpoint at the stage's last step is its result: its
    weights are loaded and nothing is trained (transformers, resumed at max_steps, trains one step more)."""
    ckpt = _resume_checkpoint(out, set_aside=tracker.main)
    if ckpt is None and (tracker.resumed_steps(stage_name) or (out / runs.TORN).is_dir()):
        _say(f"{stage_name}: no complete checkpoint to continue from: the stage starts again from step 0")
    if ckpt is not None and runs.checkpoint_step(Path(ckpt)) >= max_steps:
        kit_model.load_adapter_weights(model, Path(ckpt))
        tracker.step(stage_name, runs.checkpoint_step(Path(ckpt)))  # the summary may have been a second behind
        _say(f"{stage_name}: {Path(ckpt).name} holds its last step: nothing left to train")
        return
    trainer.train(resume_from_checkpoint=ckpt)


def _callbacks(recipe, stage_name, tracker, stop, every_completions=0):
    from kit.callbacks import CompletionsCallback, MetricsCallback, StopCallback

    offset = tracker.offset(stage_name)
    metrics_cb = MetricsCallback(tracker.metrics_writer(stage_name), stage_name, offset,
                                 on_step=lambda step: tracker.step(stage_name, step))
    completions_cb = CompletionsCallback(tracker.writer(tracker.run / runs.COMPLETIONS), stage_name, offset,
                                         every_completions)
    return [metrics_cb, completions_cb, StopCallback(stop)], completions_cb


# ---------------------------------------------------------------------------------------------------------------
# SFT (warm-up, and the fine-tuning half of rejection sampling)


def sft_dataset(recipe: Recipe, rows: list[dict]):
    """The warm-up's examples in TRL's conversational prompt-completion format: the recipe's system prompt and the
    question, then the target as an assistant turn, so TRL renders it through the chat template and the target
    ends with the template's turn-end token (the model learns to stop where its turn ends)."""
    from datasets import Dataset

    if "completion" not in rows[0]:  # worked solutions: rewrite them (rejection sampling brings its own)
        rng = random.Random(recipe.grpo.seed)
        rows = [dict(r, completion=data.sft_target(r, layout=rng.random() < recipe.sft.format_fraction))
                for r in rows]
    return Dataset.from_list([{"prompt": data.to_prompt(r["question"], recipe.data.system_prompt),
                               "completion": [{"role": "assistant", "content": r["completion"]}]} for r in rows])


def _run_sft(recipe, plan, model, tokenizer, rows, stage_dir, stage_name, tracker, stop):
    from kit.callbacks import use_compact_progress
    from trl import SFTConfig, SFTTrainer

    s = recipe.sft
    ds = sft_dataset(recipe, rows)
    out = stage_dir / "checkpoints"
    args = SFTConfig(**_common_args(recipe, plan, out), max_steps=s.max_steps, learning_rate=s.learning_rate,
                     per_device_train_batch_size=s.per_device_train_batch_size,
                     gradient_accumulation_steps=s.gradient_accumulation_steps, logging_steps=1,
                     save_steps=max(s.max_steps // 2, 1), lr_scheduler_type="cosine", **compat.warmup(SFTConfig, 0.05),
                     max_length=recipe.model.max_seq_length, completion_only_loss=True, packing=False)
    callbacks, _ = _callbacks(recipe, stage_name, tracker, stop)
    _point_logger(recipe, tracker.run, stage_name)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer, callbacks=callbacks)
    use_compact_progress(trainer)
    _say(f"{stage_name}: supervised fine-tuning on {len(ds)} examples, {s.max_steps} steps")
    tracker.update(phase=f"{stage_name}: training")
    _train_stage(trainer, model, out, stage_name, tracker, s.max_steps)


# ---------------------------------------------------------------------------------------------------------------
# GRPO


def grpo_dataset(recipe: Recipe, tokenizer):
    """GRPO prompts in TRL's conversational format with the gold `answer` column; prompts longer than
    grpo.max_prompt_length are dropped (TRL 1.x has no max_prompt_length). Where TRL cannot pass the recipe's chat
    template arguments (kit.compat.render_prompts), the prompt is the rendered text instead of the messages."""
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
        _say(f"data: dropped {dropped} of {len(rows)} questions longer than grpo.max_prompt_length "
             f"({recipe.grpo.max_prompt_length} tokens)")
    return Dataset.from_list(kept)


def grpo_config(recipe: Recipe, plan: kit_model.Plan, out: Path, stop_ids: list[int] | None = None):
    """TRL's GRPOConfig for a recipe on this machine's plan: the one place recipe fields meet TRL's names.

    `stop_ids` (kit.stopping.stop_ids of the loaded model): vLLM rollouts stop at every one of them. HF rollouts
    need nothing here: TRL stops them, and cuts the completion mask, at `tokenizer.eos_token_id`, which
    kit.stopping.prepare made the turn-end token."""
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
        **_common_args(recipe, plan, out), **vllm,
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


def _run_grpo(recipe, plan, model, tokenizer, stage_dir, stage_name, tracker, stop):
    from kit.callbacks import use_compact_progress
    from trl import GRPOTrainer

    g = recipe.grpo
    ds = grpo_dataset(recipe, tokenizer)
    from kit.stopping import stop_ids

    args = grpo_config(recipe, plan, stage_dir / "checkpoints", stop_ids(model, tokenizer))
    callbacks, completions_cb = _callbacks(recipe, stage_name, tracker, stop, g.completions_every)
    if recipe.eval.every_steps:
        from kit.callbacks import EvalCallback

        callbacks.append(EvalCallback(recipe, tokenizer, tracker.metrics_writer(stage_name), stage_name,
                                      tracker.offset(stage_name), scratch=str(stage_dir / "eval_lora")))
    _point_logger(recipe, tracker.run, stage_name)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards.reward_functions(recipe), args=args,
                          train_dataset=ds, processing_class=tokenizer, callbacks=callbacks)
    completions_cb.trainer = trainer
    if args.use_vllm and args.vllm_mode == "colocate" and plan.backend == "transformers":
        from kit.generation import VLLMEngine, attach_engine

        # evaluation during training (and later rejection sampling) answer through the same engine
        attach_engine(model, VLLMEngine(trainer.vllm_generation.llm, "vLLM (TRL's colocated engine, weights synced)"))
        _say("rollouts, evaluation during training and rejection sampling generate with TRL's colocated vLLM engine")
    use_compact_progress(trainer)
    _say(f"{stage_name}: GRPO on {len(ds)} questions, {g.max_steps} steps, {g.num_generations} answers per "
         f"question, rewards {', '.join(f'{r.function} x{r.weight:g}' for r in recipe.rewards)}")
    if plan.backend == "unsloth":
        _say("Unsloth compiles its kernels during the first step: expect a few minutes (about 3 on an H100) "
             "before step 1 is logged. It is not hung.")
        tracker.update(phase=f"{stage_name}: compiling (first step takes minutes)")
    else:
        tracker.update(phase=f"{stage_name}: training")
    _train_stage(trainer, model, stage_dir / "checkpoints", stage_name, tracker, g.max_steps)


# ---------------------------------------------------------------------------------------------------------------
# Rejection sampling: k answers per question, keep the correct ones (and the judge's), de-duplicate


def _rejection_sample(recipe, stage, model, tokenizer, stage_dir, tracker) -> list[dict]:
    import torch

    from kit.generation import Generator

    kept_path = stage_dir / "kept.jsonl"
    if kept_path.is_file() and _resume_checkpoint(stage_dir / "checkpoints", set_aside=False):
        # resuming its fine-tuning: the same rows (the trainer skips the batches it has seen), not a new draw
        kept = metrics.read_jsonl(kept_path)
        _say(f"{stage_dir.name}: continuing the fine-tuning on the {len(kept)} answers kept before ({kept_path})")
        return kept
    rows = data.questions(recipe.data, recipe.data.split, stage.questions, recipe.grpo.seed + 1)
    tracker.update(phase=f"{stage_dir.name}: sampling {stage.samples_per_question} answers x {len(rows)} "
                         "questions")
    _say(f"{stage_dir.name}: sampling {stage.samples_per_question} answers for each of {len(rows)} questions")
    _sampling_engine(recipe, stage, model)
    gen = Generator.of_training_model(model, tokenizer, stage_dir / "sampling_lora",
                                      data.template_kwargs(recipe.data))
    _say(f"{stage_dir.name}: answers from {gen.engine_name}")
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
    judge = _load_judge(stage) if stage.judge else None
    kept, n_correct = filter_answers(rows, answers, judge, stage.judge_prompt)
    total = len(rows) * stage.samples_per_question
    tracker.metrics_writer(stage_dir.name).write({
        "step": 0, "run_step": tracker.offset(stage_dir.name), "time": round(time.time(), 3),
        "stage": stage_dir.name, "rejection/sampled": total, "rejection/correct_rate": n_correct / total,
        "rejection/kept": len(kept)})
    _say(f"{stage_dir.name}: {n_correct}/{total} sampled answers correct, {len(kept)} kept after de-duplication"
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


def _sampling_engine(recipe, stage, model) -> None:
    """Transformers backend with vLLM: sample through the engine of an earlier GRPO stage, else start one, unless a
    GRPO stage follows (TRL starts its own engine there, and two engines would share one GPU)."""
    from kit.generation import VLLMEngine, attach_engine, attached_engine

    plan = kit_model.plan(recipe)
    if not (plan.fast_inference and plan.backend == "transformers") or attached_engine(model) is not None:
        return
    stages = list(recipe.pipeline())
    if any(s.kind == "grpo" for s in stages[stages.index(stage) + 1:]):
        _say("rejection sampling generates with HF: a GRPO stage follows, and its vLLM engine would be a second one")
        return
    attach_engine(model, VLLMEngine(kit_model.start_vllm(recipe.model, plan), "vLLM (in-process engine, weights "
                                                                               "synced)"))


def filter_answers(rows: list[dict], answers: list[list[str]], judge=None, judge_prompt: str = "") -> tuple[list, int]:
    """Keep the sampled answers `correctness_reward` accepts, once each (whitespace ignored), that the judge (if
    any) approves. Returns (kept rows, number of correct samples before de-duplication and judging)."""
    from kit.rewards import correctness_reward

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


def _load_judge(stage: StageSpec):
    """An LLM-as-judge: approves an answer when its reply starts with YES."""
    from kit.generation import Generator
    from kit.recipe import recipe_from_dict

    if stage.judge.endswith((".yaml", ".yml")):  # a recipe: its model section says how to load the judge
        from kit.recipe import load_recipe

        judge_recipe = load_recipe(stage.judge)
    else:
        judge_recipe = recipe_from_dict({"model": {"name": stage.judge, "load_in_4bit": True,
                                                   "fast_inference": False}})
    model, tokenizer, _ = kit_model.load_for_inference(judge_recipe, adapter=None)
    gen = Generator(model, tokenizer)

    def approve(question: str, completion: str, prompt: str) -> bool:
        text = prompt.format(question=question, completion=completion)
        reply = gen.generate([[{"role": "user", "content": text}]], max_new_tokens=4)[0][0]
        return reply.strip().upper().startswith("YES")

    return approve


# ---------------------------------------------------------------------------------------------------------------
# Run bookkeeping


class Tracker:
    """Keeps summary.json current (status, phase, steps, reward means) and owns the metrics writers."""

    def __init__(self, run: Path, recipe: Recipe, plan: kit_model.Plan, resumed: bool, main: bool = True):
        self.run, self.recipe, self.main = run, recipe, main
        previous = runs.read_summary(run) if resumed else {}
        done = {s["name"]: s for s in previous.get("stages", [])}
        stages = []
        for i, s in enumerate(recipe.pipeline()):
            name = f"{i + 1}-{s.kind}"
            before = done.get(name, {})
            wanted = recipe.stage_steps(s)
            status = before.get("status", "pending")
            if status == "finished" and before.get("steps", 0) < wanted:  # resumed with more steps (_check_resume)
                status = "stopped"
            stages.append({"name": name, "kind": s.kind, "status": status, "steps": before.get("steps", 0),
                           "max_steps": wanted})
        self.t0 = time.time()
        self.summary = {
            "status": "running", "phase": "starting", "run": str(Path(run).resolve()), "recipe": recipe.run.name,
            "description": recipe.description, "model": recipe.model.name, "backend": plan.backend,
            "device": plan.hardware.name, "notes": list(plan.notes),
            "started": previous.get("started", time.strftime("%Y-%m-%d %H:%M:%S")),
            "elapsed_s": previous.get("elapsed_s", 0.0), "pid": os.getpid(), "host": socket.gethostname(),
            "stage": None, "step": 0, "run_step": previous.get("run_step", 0),
            "max_steps": sum(s["max_steps"] for s in stages), "stages": stages, "error": None,
        }
        self._resumed_steps = {s["name"]: s["steps"] for s in stages}
        self._base_elapsed = self.summary["elapsed_s"]
        self._last_write = 0.0
        if resumed and main:
            self._truncate_metrics()
        self.write()
        self._done = threading.Event()
        if main:  # beats while the process lives, through minutes-long phases (compiling, loading vLLM) too
            runs.beat(run)
            threading.Thread(target=self._beat, daemon=True, name="kit-heartbeat").start()

    def _beat(self) -> None:
        while not self._done.wait(runs.HEARTBEAT_S):
            with contextlib.suppress(OSError):  # a full disk or a Drive hiccup: the next beat tries again
                runs.beat(self.run)

    def _truncate_metrics(self) -> None:
        """On resume, drop records logged after the complete checkpoint the interrupted stage restarts from (all
        of the stage's, step 0 included, when it starts again: it logs them again), so no row is there twice and
        curves don't fold back on themselves, and rewrite a file whose last line was torn mid-write (the next
        record would be glued onto it). Torn checkpoints are set aside here, before anything reads them."""
        for s in self.summary["stages"]:
            if s["status"] == "finished":
                continue
            ckpt = _resume_checkpoint(self.run / runs.STAGES / s["name"] / "checkpoints")
            upto = runs.checkpoint_step(Path(ckpt)) if ckpt else -1
            for path in (self.run / runs.METRICS, self.run / runs.STAGES / s["name"] / runs.METRICS,
                         self.run / runs.COMPLETIONS):
                records = metrics.read_jsonl(path)
                keep = [r for r in records if r.get("stage") != s["name"] or r.get("step", 0) <= upto]
                if len(keep) != len(records) or metrics.torn(path):
                    metrics.rewrite_jsonl(path, keep)

    def resumed_steps(self, name: str) -> int:
        """Steps the stage had trained before this process resumed it (0 in a fresh run)."""
        return self._resumed_steps.get(name, 0)

    def write(self) -> None:
        if not self.main:
            return
        self.summary["elapsed_s"] = round(self._base_elapsed + time.time() - self.t0, 1)
        self.summary["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        runs.write_summary(self.run, self.summary)

    def update(self, **fields) -> None:
        self.summary.update(fields)
        self.write()

    def _stage(self, name: str) -> dict:
        return next(s for s in self.summary["stages"] if s["name"] == name)

    def stage_status(self, name: str) -> str:
        return self._stage(name)["status"]

    def offset(self, name: str) -> int:
        """Steps done by the stages before `name` (x-axis offset of its curves)."""
        total = 0
        for s in self.summary["stages"]:
            if s["name"] == name:
                return total
            total += s["steps"]
        raise KeyError(name)

    def writer(self, *paths: Path) -> metrics.JsonlWriter:
        """A JSONL writer to `paths`; on non-main processes one that writes nowhere."""
        return metrics.JsonlWriter(*paths) if self.main else metrics.JsonlWriter()

    def metrics_writer(self, name: str) -> metrics.JsonlWriter:
        return self.writer(self.run / runs.METRICS, self.run / runs.STAGES / name / runs.METRICS)

    def start_stage(self, name: str, stage: StageSpec) -> None:
        self._stage(name)["status"] = "running"
        self.update(stage=name, step=self._stage(name)["steps"])

    def step(self, name: str, step: int) -> None:
        self._stage(name)["steps"] = step
        self.summary["step"] = step
        self.summary["run_step"] = self.offset(name) + step
        if self.summary["phase"].endswith("compiling (first step takes minutes)"):
            self.summary["phase"] = f"{name}: training"
        if time.time() - self._last_write > 1.0:  # cheap enough every second, not every micro-step
            self._last_write = time.time()
            self.write()
        killpoints.reached("step", f"{name}/{step}")

    def end_stage(self, name: str, status: str) -> None:
        self._stage(name)["status"] = status
        self.write()

    def finish(self, status: str, message: str | None = None) -> None:
        self._done.set()
        records = metrics.read_jsonl(self.run / runs.METRICS)
        grpo = [r for r in records if str(r.get("stage", "")).endswith("-grpo")]
        keys = metrics.reward_keys(grpo)
        self.summary["first"] = {k: metrics.window_mean(grpo, k, first=True) for k in keys}
        self.summary["final"] = {k: metrics.window_mean(grpo, k, first=False) for k in keys}
        passes = sorted({k for r in grpo for k in r if k.startswith("eval/pass@")}, key=lambda k: int(k[10:]))
        for k in ("eval/accuracy_strict", "eval/accuracy_lenient", "eval/format_rate", *passes):
            points = metrics.series(grpo, k)  # evaluations are few and already averaged: first and last point
            if points:
                self.summary["first"][k], self.summary["final"][k] = points[0][1], points[-1][1]
        for s in self.summary["stages"]:
            if s["status"] == "running":
                s["status"] = status
        self.summary.update(status=status, phase=status, error=message if status == "failed" else None,
                            message=message, ended=time.strftime("%Y-%m-%d %H:%M:%S"))
        try:
            self.write()
        except OSError as e:  # a full disk: the old summary stays whole (atomic), its dead pid reads as failed
            _say(f"could not write {self.run / runs.SUMMARY}: {e}")


def _count_params(model) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{total / 1e6:.2f}M parameters, {trainable / 1e6:.2f}M trainable"


def _explain(e: Exception, run: Path | None = None) -> str:
    text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    free = _disk_full(e, run) if run is not None else None
    if free is not None:
        return (f"the disk is full: {run} has {free / 2**20:.1f} MiB free ({text[:120]}); the last "
                f"complete checkpoint and the logs are kept: free some space (torn checkpoints set aside in "
                f"stages/*/checkpoints/{runs.TORN}/ can go), then continue with: kit train --resume {run}")
    if "out of memory" in str(e).lower():
        return (f"{text} -> the GPU ran out of memory; lower grpo.num_generations, grpo.max_completion_length or "
                "model.gpu_memory_utilization (kit fit RECIPE estimates the peak)")
    return text


def _disk_full(e: BaseException, run: Path) -> int | None:
    """Free bytes at `run` when `e` is a full disk, else None. Python and safetensors say ENOSPC; torch.save only
    says its stream failed ("unexpected pos", "iostream error"), so that counts when the disk is indeed nearly
    full (the torn file has taken the rest)."""
    import errno
    import shutil

    try:
        free = shutil.disk_usage(run).free
    except OSError:
        return None
    chain, seen = e, []
    while chain is not None and chain not in seen:
        seen.append(chain)
        if isinstance(chain, OSError) and chain.errno == errno.ENOSPC:
            return free
        chain = chain.__cause__ or chain.__context__
    texts = " ".join(str(x) for x in seen)
    if "No space left on device" in texts or "os error 28" in texts:
        return free
    if free < 64 * 2**20 and any(t in texts for t in ("unexpected pos", "iostream error", "write failed")):
        return free
    return None


def _say(message: str) -> None:
    print(f"[kit] {message}", flush=True)
