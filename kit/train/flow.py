"""One training flow, top to bottom: recipe -> plan -> run folder -> model -> stages (SFT / GRPO / rejection-sampling
SFT) -> save.

    kit train recipes/demo.yaml --set grpo.max_steps=20

Everything the run produces lands in its run folder (kit/runs); trl/transformers are imported only after
kit.models.loading has loaded the model, so Unsloth (when used) is imported first. The flow hands its work to the
modules beside it: preflight (checks before any model), resume, stages (the TRL trainers), rejection, tracker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import traceback
from pathlib import Path

from kit import recipe as kit_recipe
from kit import runs
from kit.errors import KitError
from kit.models.fit import warn_if_too_big
from kit.models.loading import load, load_adapter_weights
from kit.models.plan import check_vllm_server
from kit.models.plan import plan as plan_for
from kit.recipe import Recipe, StageSpec, load_recipe, save_recipe
from kit.task import data
from kit.task.rewards import RewardError
from kit.train import killpoints
from kit.train.log import say
from kit.train.preflight import check_grpo_args, check_task, keep_reward_files
from kit.train.rejection import rejection_sample
from kit.train.resume import check_resume, still_training
from kit.train.stages import run_grpo, run_sft
from kit.train.tracker import StopFlag, Tracker, count_params, explain
from kit.train.trl_args import vllm_correction


def train(recipe_path: str | Path | None = None, overrides: list[str] = (), resume: str | Path | None = None,
          run_dir: str | Path | None = None) -> Path:
    """Run a recipe (or resume a run folder) and return the run folder. `run_dir` names the folder to create
    (the app chooses it so it can put train.log inside); by default it is <run.output_dir>/<name>-<timestamp>."""
    # --- Recipe and plan: every check that needs no model happens here -------------------------------------
    if resume is not None:
        run = runs.open_run(resume)
        if runs.status(run) == "running" and int(os.environ.get("RANK", 0)) == 0:
            raise KitError(still_training(run))
        saved = load_recipe(run / runs.RECIPE)
        recipe = load_recipe(run / runs.RECIPE, overrides)
        check_resume(run, saved, recipe)
    else:
        recipe = load_recipe(recipe_path, overrides)
    # resumed: the weights load as the run trained them (an older CPU run of a 4-bit recipe trained in float32)
    plan = plan_for(recipe, trained=runs.trained_plan(run) if resume is not None else None)
    if recipe.model.vllm_server:  # before anything loads: the server must be up
        check_vllm_server(recipe.model.vllm_server)
    say(f"recipe {recipe.run.name}: {recipe.model.name} | backend {plan.backend} | {plan.weights} | "
        f"{'vLLM' if plan.fast_inference else 'HF'} generation | {plan.hardware.name}")
    check_grpo_args(recipe)
    idle = kit_recipe.on_policy_notes(recipe, vllm_correction=False)
    if idle and vllm_correction(recipe, plan):  # vLLM's correction keeps old log-probs: the fields act
        idle = []
    for note in [*plan.notes, *kit_recipe.ineffective_overrides(recipe, overrides), *idle]:
        say(note)
    warn_if_too_big(recipe, plan)
    check_task(recipe)
    # --- Run folder --------------------------------------------------------------------------------------------
    # Under `accelerate launch` every process runs this flow; only the main one writes the run folder.
    main = int(os.environ.get("RANK", 0)) == 0
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        if resume is None and run_dir is None:
            raise KitError("multi-process launch: pass --run-dir DIR so every process uses the same run folder")
        say(f"distributed: world size {world}, rank {os.environ.get('RANK')}")
    if resume is None and run_dir is not None:
        run = Path(run_dir)
        if main and (run / runs.RECIPE).exists():
            raise KitError(f"{run} is already a run folder; continue it with --resume {run}")
        run.mkdir(parents=True, exist_ok=True)
    elif resume is None:
        run = runs.new_run_dir(recipe.run.output_dir, recipe.run.name)
    if main:
        recipe = keep_reward_files(recipe, run)
    killpoints.install(run)  # test-only (KIT_TEST_KILL_AT); nothing without it
    tracker = Tracker(run, recipe, plan, resumed=resume is not None, main=main)
    say(f"run folder: {run}")

    stop = StopFlag().install()
    try:
        # --- Model -------------------------------------------------------------------------------------------
        tracker.update(phase="loading model")
        model, tokenizer = load(recipe, plan, seed=recipe.grpo.seed)
        say(f"model loaded: {count_params(model)}")

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
                load_adapter_weights(model, previous_adapter)
                previous_adapter = None
            stage_recipe = _stage_recipe(recipe, stage)
            stage_dir.mkdir(parents=True, exist_ok=True)
            if main:
                save_recipe(stage_recipe, stage_dir / runs.RECIPE)
            tracker.start_stage(name, stage)
            if stage.kind == "sft":
                rows = data.questions(recipe.data, recipe.data.split, recipe.sft.limit, recipe.grpo.seed)
                run_sft(stage_recipe, plan, model, tokenizer, rows, stage_dir, name, tracker, stop)
            elif stage.kind == "rejection_sft":
                rows = rejection_sample(stage_recipe, plan, stage, model, tokenizer, stage_dir, tracker)
                run_sft(stage_recipe, plan, model, tokenizer, rows, stage_dir, name, tracker, stop)
            else:
                run_grpo(stage_recipe, plan, model, tokenizer, stage_dir, name, tracker, stop)
            if main:
                model.save_pretrained(stage_dir / runs.ADAPTER)
                tokenizer.save_pretrained(stage_dir / runs.ADAPTER)
            tracker.end_stage(name, "stopped" if stop.requested else "finished")

        if previous_adapter is not None:  # every remaining stage had finished: keep their adapter
            load_adapter_weights(model, previous_adapter)

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
        message = explain(e, run)
        tracker.finish("failed", message)
        raise KitError(f"training failed: {message} (traceback: {run / 'error.log'})") from None
    say(f"{tracker.summary['status']}: {run}")
    return run


def _stage_recipe(recipe: Recipe, stage: StageSpec) -> Recipe:
    """The recipe a stage runs with: the stage's max_steps / learning_rate replace its section's."""
    section = "grpo" if stage.kind == "grpo" else "sft"
    changes = {k: v for k, v in (("max_steps", stage.max_steps), ("learning_rate", stage.learning_rate))
               if v is not None}
    if not changes:
        return recipe
    return dataclasses.replace(recipe, **{section: dataclasses.replace(getattr(recipe, section), **changes)})
