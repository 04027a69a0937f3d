"""The task checked before any model loads (rows, rewards, the experiment logger), reward files kept in the run
folder, and where an experiment logger writes."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import shutil
from pathlib import Path

from kit import runs
from kit.errors import KitError
from kit.models import compat
from kit.recipe import Recipe, save_recipe
from kit.task import data, rewards
from kit.train import trl_args

LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",),
                   "mlflow": ("mlflow",)}


def check_task(recipe: Recipe) -> None:
    """Read the task's rows (missing fields and unparseable gold answers fail here), call every reward once on
    sample completions of one of them, and find the experiment logger's package: one-line errors, no model yet."""

    splits = [recipe.data.split] + ([recipe.eval.split] if recipe.eval.every_steps else [])
    rows = [data.questions(recipe.data, split, 1, recipe.grpo.seed) for split in dict.fromkeys(splits)]
    rewards.check_rewards(recipe, rows[0][0])
    packages = LOGGER_PACKAGES.get(recipe.run.report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise KitError(f"run.report_to={recipe.run.report_to}: the {packages[0]} package is not installed; "
                       f"pip install {packages[0]} (or run.report_to=none)")


def check_grpo_args(recipe: Recipe) -> None:
    """The grpo fields the kit passes to TRL only when set (kit.train.trl_args.OPTIONAL_ARGS) and grpo.trl_args,
    against the installed GRPOConfig, before any model loads: a field this TRL lacks (the t4 profile's 0.22 has no
    multi_objective_aggregation, off_policy_mask_threshold, vllm_importance_sampling_*, no cispo/sapo/luspo/vespo
    loss), a trl_args name it does not know, or one a recipe field or the plan sets, fails in one line. A recipe
    that sets none of them has nothing to check, and TRL is not imported before the model (Unsloth first)."""
    g = recipe.grpo
    if not trl_args.optional_args(g) and not g.trl_args and g.loss_type == type(g)().loss_type:
        return
    from trl import GRPOConfig

    main = f"profile main (trl {compat.PROFILES['main']['trl']}) has it"
    this = f"this TRL ({compat.version('trl')}, profile {compat.profile()})"
    if not compat.grpo_takes(GRPOConfig, "loss_type", g.loss_type):
        raise KitError(f"grpo.loss_type: {g.loss_type} is not a loss of {this}; {main}")
    for name, value in trl_args.optional_args(g).items():
        if not compat.grpo_takes(GRPOConfig, name, value):
            default = getattr(type(g)(), name)
            raise KitError(f"grpo.{name}: {this} has no such GRPOConfig field, so {value!r} cannot act; {main} "
                           f"(or leave it at its default, {default!r})")
    for name in g.trl_args:
        known, why = compat.grpo_takes(GRPOConfig, name), trl_args.reserved(name)
        if why and (known or not name.startswith(trl_args.FROM_PLAN_PREFIXES)):  # a typo in a family: hint below
            raise KitError(f"grpo.trl_args.{name}: not allowed here; {why}")
        if not known:
            close = difflib.get_close_matches(name, compat.field_names(GRPOConfig), n=1)
            hint = "; see TRL's GRPOConfig for the names"
            if close:
                taken = trl_args.reserved(close[0])
                hint = f"; did you mean {close[0]}?" + (f" ({taken})" if taken else "")
            raise KitError(f"grpo.trl_args.{name}: {this} has no such GRPOConfig argument{hint}")


def keep_reward_files(recipe: Recipe, run: Path) -> Recipe:
    """Copy every reward file into RUN/rewards/ and save the resolved recipe pointing at the copies (relative to the
    run folder), so the run says what it was trained with and --resume runs the same code. Returns the recipe the
    run trains with: the same, reading the copies."""

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


def point_logger(recipe: Recipe, run: Path, stage_name: str) -> None:
    """Experiment loggers write inside the run folder. This transformers has no logging_dir argument: TensorBoard's
    callback reads TENSORBOARD_LOGGING_DIR when the trainer is built. A user's own W&B / MLflow settings win."""
    if recipe.run.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tensorboard" / stage_name)
    elif recipe.run.report_to == "wandb":
        os.environ.setdefault("WANDB_DIR", str(run))
        os.environ.setdefault("WANDB_PROJECT", "grpo-kit")
    elif recipe.run.report_to == "mlflow":
        os.environ.setdefault("MLFLOW_TRACKING_URI", (run / "mlruns").resolve().as_uri())
