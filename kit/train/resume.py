"""Resuming a run: which checkpoint a stage continues from (complete ones only; torn ones set aside), what may
change on --resume, and why a run that still reads as running is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kit import runs
from kit.errors import KitError
from kit.models.loading import load_adapter_weights
from kit.recipe import Recipe
from kit.train.log import say


def still_training(run: Path) -> str:
    """Why --resume refuses a run that reads as running: here, its live process; elsewhere (a Colab session's run on
    Drive), its heartbeat, which stops with its machine."""
    s = runs.read_summary(run)
    if s.get("host") == os.uname().nodename:
        return f"{run} is still training (pid {s.get('pid')}); stop it before resuming"
    age = time.time() - (runs.last_beat(run) or time.time())
    wait = max(0, 3 * runs.HEARTBEAT_S - age)
    return (f"{run} is still training on {s.get('host')} (its heartbeat is {age:.0f} s old); stop it there, or, if "
            f"that machine or session is gone, resume in {wait:.0f} s, when its heartbeat has stopped")


def check_resume(run: Path, saved: Recipe, recipe: Recipe) -> None:
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
        elif not resume_checkpoint(run / runs.STAGES / before["name"] / "checkpoints", set_aside=False):
            why = "it kept no checkpoint to continue from"
        else:
            continue
        raise KitError(f"--resume: stage {before['name']} finished after {done} steps and cannot be set to "
                       f"{wanted} ({why}); start a new run for a different length")


def resume_checkpoint(out: Path, set_aside: bool = True) -> str | None:
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
            say(f"{ckpt} is torn ({problem}): skipped, kept as {where}")
    return found


def train_stage(trainer, model, out: Path, stage_name: str, tracker, max_steps: int) -> None:
    """trainer.train(), from the stage's newest complete checkpoint if it has one; a stage that had trained steps
    but kept none complete says that it starts again. A checkpoint at the stage's last step is its result: its
    weights are loaded and nothing is trained (transformers, resumed at max_steps, trains one step more)."""
    ckpt = resume_checkpoint(out, set_aside=tracker.main)
    if ckpt is None and (tracker.resumed_steps(stage_name) or (out / runs.TORN).is_dir()):
        say(f"{stage_name}: no complete checkpoint to continue from: the stage starts again from step 0")
    if ckpt is not None and runs.checkpoint_step(Path(ckpt)) >= max_steps:
        load_adapter_weights(model, Path(ckpt))
        tracker.step(stage_name, runs.checkpoint_step(Path(ckpt)))  # the summary may have been a second behind
        say(f"{stage_name}: {Path(ckpt).name} holds its last step: nothing left to train")
        return
    if ckpt is not None and _holds_other_adapters(Path(ckpt)):
        # TRL keeps a frozen copy of a stage's starting adapter as the KL reference ("ref", when beta > 0 and the
        # stage starts from an adapter: a warm-up's, an earlier stage's), and the checkpoint holds it in a
        # subfolder. transformers then resumes only the subfolders' adapters: the one being trained, at the
        # checkpoint's root, would silently restart from the stage's start. Its weights are loaded here.
        load_adapter_weights(model, Path(ckpt))
    trainer.train(resume_from_checkpoint=ckpt)


def _holds_other_adapters(ckpt: Path) -> bool:
    """Whether a checkpoint holds adapters besides the trained one (PEFT saves each extra one in a subfolder)."""
    return any((p / "adapter_config.json").is_file() for p in ckpt.iterdir())
