"""The run folder: the contract between the trainer and everything that reads a run (CLI, app, eval, export).

    runs/<name>-<YYYYmmdd-HHMMSS>/
      recipe.yaml        the resolved recipe (every field)
      summary.json       status (running/finished/failed/stopped), phase, steps, times, reward means, and the
                         plan the weights were trained with (trained_plan)
      metrics.jsonl      one object per log event: step, run_step, time, stage, and TRL's keys verbatim
      completions.jsonl  sample completions with their per-reward scores
      train.log          stdout/stderr when launched by the app
      heartbeat          the trainer's clock (epoch seconds), rewritten every minute while it is alive
      adapter/           the final LoRA adapter + tokenizer
      stages/<i>-<kind>/ per stage: recipe.yaml, metrics.jsonl, adapter/, checkpoints/
                         (checkpoints/torn/: checkpoints a kill or a full disk left incomplete, set aside on resume;
                         reused.json: this finished stage was copied from another run by `kit study`, which names it)
      eval/              kit eval results

Nothing in it names the folder itself: a run folder copied or moved elsewhere (another disk, Google Drive) is
listed, shown and resumed from there.

No torch here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kit.errors import KitError

RECIPE, SUMMARY, METRICS, COMPLETIONS = "recipe.yaml", "summary.json", "metrics.jsonl", "completions.jsonl"
LOG, ADAPTER, STAGES, EVAL = "train.log", "adapter", "stages", "eval"
STATUSES = ("running", "finished", "failed", "stopped")
CHECKPOINTS, TORN = "checkpoints", "torn"
HEARTBEAT, HEARTBEAT_S = "heartbeat", 60.0  # a trainer silent for 3 beats has gone (its machine with it)


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir) / f"{name}-{stamp}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def open_run(path: str | Path) -> Path:
    """A run folder, or a KitError that says what a run folder is and where they are."""
    path = Path(path)
    if not path.exists():
        raise KitError(f"run folder not found: {path}; list runs with `kit runs`")
    if not path.is_dir() or not (path / RECIPE).is_file():
        raise KitError(f"{path} is not a run folder (it has no {RECIPE}); run folders are made by `kit train` "
                       "under runs/")
    return path


def read_summary(run: str | Path) -> dict:
    """summary.json as a dict ({} when missing or unreadable). Read from a folder that was copied or moved since it
    was written, the old path in its messages ("continue with: kit train --resume OLD") reads as the folder's
    own."""
    try:
        data = json.loads((Path(run) / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    written = data.get("run")
    # (the trainer writes it absolute; an older relative one says nothing about where it was)
    if isinstance(written, str) and Path(written).is_absolute() and not _same_folder(written, run):
        for key in ("message", "error"):
            if isinstance(data.get(key), str):
                data[key] = data[key].replace(written, str(run))
        data["trained_in"], data["run"] = written, str(run)
    return data


# What the kit wrote into summary.json's notes, before runs recorded their plan, when a CPU run's recipe asked for
# 4-bit: it trained in full precision.
_OLD_CPU_4BIT_NOTE = "4-bit (bitsandbytes) needs a CUDA GPU"


def trained_plan(run: str | Path) -> dict:
    """How a run's weights were trained (summary.json "plan": backend, device, dtype, load_in_4bit, quantization,
    generation, optim), for evaluation, chat, export and --resume to load them the same way; a stage folder
    (RUN/stages/<i>-<kind>) answers for its run. Runs written before the plan was recorded: on a CPU the kit
    always trained them in full precision (whatever the recipe said), so {"device": "cpu", "load_in_4bit": False};
    on a GPU as the recipe said: {}. No summary: {}.

    >>> trained_plan("/nonexistent")
    {}
    """
    run = Path(run)
    if run.parent.name == STAGES and not (run / SUMMARY).is_file():
        run = run.parent.parent
    summary = read_summary(run)
    if isinstance(summary.get("plan"), dict):
        return dict(summary["plan"])
    notes = summary.get("notes") if isinstance(summary.get("notes"), list) else []
    if summary.get("device") == "cpu" or any(_OLD_CPU_4BIT_NOTE in str(n) for n in notes):
        return {"device": "cpu", "load_in_4bit": False}
    return {}


def _same_folder(written: str, run: str | Path) -> bool:
    try:
        return Path(written).resolve() == Path(run).resolve()
    except OSError:
        return False


def write_summary(run: str | Path, summary: dict) -> None:
    """Atomic: a reader never sees a half-written summary."""
    path = Path(run) / SUMMARY
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def beat(run: str | Path) -> None:
    """The trainer is alive now (kit.train's Tracker calls it every HEARTBEAT_S seconds, from a thread)."""
    path = Path(run) / HEARTBEAT
    tmp = path.with_name(HEARTBEAT + ".tmp")
    tmp.write_text(f"{time.time():.0f}\n")
    os.replace(tmp, path)


def last_beat(run: str | Path) -> float | None:
    try:
        return float((Path(run) / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None


def status(run: str | Path, summary: dict | None = None) -> str:
    """running / finished / failed / stopped. A run whose summary says running but whose process is gone (killed,
    machine rebooted) is reported as failed: on this host its pid is not alive; on another (a Colab session that
    ended, its run folder on Drive) its heartbeat stopped more than 3 beats ago."""
    summary = read_summary(run) if summary is None else summary
    if not summary:  # missing or unreadable: nobody is keeping it current
        return "failed"
    state = summary.get("status", "failed")
    here = summary.get("host") == os.uname().nodename
    if state == "running" and here and summary.get("trained_in"):  # a copy of a running run: nobody writes it
        return "failed"
    if state == "running" and here and summary.get("pid"):
        if not _alive(int(summary["pid"])):
            return "failed"
    if state == "running" and not here:
        last = last_beat(run)
        if last is not None and time.time() - last > 3 * HEARTBEAT_S:
            return "failed"
    return state


def list_runs(output_dir: str | Path = "runs") -> list[Path]:
    """Run folders under `output_dir`, newest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and (p / RECIPE).is_file()]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)


def latest_adapter(run: str | Path) -> Path | None:
    """The final adapter, else the newest stage adapter (a stopped pipeline), else None."""
    run = Path(run)
    if (run / ADAPTER / "adapter_config.json").is_file():
        return run / ADAPTER
    stages = sorted((run / STAGES).glob("*/adapter/adapter_config.json"),
                    key=lambda p: int(p.parent.parent.name.split("-")[0])) if (run / STAGES).is_dir() else []
    return stages[-1].parent if stages else None


def log_tail(run: str | Path, lines: int = 30) -> str:
    path = Path(run) / LOG
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    # tqdm redraws with \r: keep what the line finally showed
    shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(shown[-lines:])


# --- checkpoints ----------------------------------------------------------------------------------------------
# transformers writes a checkpoint into its final folder, not atomically: the adapter, optimizer.pt, scheduler.pt,
# rng_state*.pth, then trainer_state.json last. A kill or a full disk in between leaves a folder that
# `Trainer.train(resume_from_checkpoint=...)` cannot continue from (no trainer_state.json) or, worse, continues
# from silently without its optimizer or random state. A checkpoint counts only when everything a resume reads is
# there and whole.


def checkpoint_step(path: Path) -> int | None:
    """N of a checkpoint-N folder, else None."""
    head, _, tail = path.name.rpartition("-")
    return int(tail) if head == "checkpoint" and tail.isdigit() else None


def checkpoint_problem(path: str | Path, step: int | None = None) -> str | None:
    """What keeps a checkpoint folder from being resumed (None: it is complete). Checks the files a resume
    reads: trainer_state.json (written last, parsed, its global_step the folder's: `step`, else N of its name),
    the adapter, the optimizer, the scheduler and the random state; weights and torch files whole (a truncated
    tail is a torn write).

    >>> checkpoint_problem("/nonexistent/checkpoint-5")
    'no trainer_state.json'
    """
    path = Path(path)
    step = checkpoint_step(path) if step is None else step
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError):
        return "trainer_state.json is cut short"
    if not isinstance(state, dict) or state.get("global_step") != step:
        return f"trainer_state.json says step {state.get('global_step') if isinstance(state, dict) else '?'}"
    deepspeed = any(path.glob("global_step*"))  # DeepSpeed keeps optimizer and scheduler in its own folder
    needs = [("adapter_config.json",), ("adapter_model.safetensors", "adapter_model.bin")]
    if not deepspeed:
        needs += [("optimizer.pt", "optimizer.bin", "optimizer_0"), ("scheduler.pt",)]
    for names in needs:
        found = [path / n for n in names if (path / n).exists()]
        if not found:
            return f"no {names[0]}"
        if not _whole(found[0]):
            return f"{names[0]} is cut short"
    rng = sorted(path.glob("rng_state*.pth"))
    if not rng:
        return "no rng_state.pth"
    if not all(_whole(p) for p in rng):
        return f"{rng[0].name} is cut short"
    return None


def _whole(path: Path) -> bool:
    """Not cut short: a safetensors file as long as its header says, a torch (zip) file ending in its directory."""
    if path.is_dir():
        return True
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if path.suffix == ".safetensors":
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                return size == 8 + n + end
            if path.suffix in (".pt", ".pth"):
                if size < 22:
                    return False
                f.seek(-22, os.SEEK_END)  # zip's end-of-central-directory record, no comment (torch.save)
                return f.read(4) == b"PK\x05\x06"
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return False
    return size > 0


def checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoint-N folders in `folder`, oldest step first."""
    folder = Path(folder)
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) is not None] \
        if folder.is_dir() else []
    return sorted(found, key=checkpoint_step)


def set_aside(ckpt: Path) -> Path:
    """Move a torn checkpoint into <checkpoints>/torn/ (out of the checkpoint-* glob transformers resumes and
    rotates from); nothing is deleted. Returns where it went."""
    folder = ckpt.parent / TORN
    folder.mkdir(exist_ok=True)
    target, n = folder / ckpt.name, 1
    while target.exists():  # torn twice at the same step
        n += 1
        target = folder / f"{ckpt.name}.{n}"
    os.replace(ckpt, target)
    return target


def torn_checkpoints(run: str | Path, summary: dict | None = None) -> list[tuple[Path, str]]:
    """(folder, what is wrong) of every torn checkpoint a run holds: those set aside in stages/*/checkpoints/torn/,
    and, unless the run is training (its newest may be being written), incomplete ones not yet set aside (the
    next --resume sets them aside)."""
    run = Path(run)
    stages = run / STAGES
    if not stages.is_dir():
        return []
    training = status(run, summary) == "running"
    found = []
    for stage in sorted(stages.iterdir(), key=lambda p: p.name):
        folder = stage / CHECKPOINTS
        for ckpt in sorted((folder / TORN).glob("checkpoint-*")):  # checkpoint-N, or checkpoint-N.2 (torn twice)
            step = checkpoint_step(ckpt.with_name(ckpt.name.split(".")[0]))
            found.append((ckpt, f"set aside: {checkpoint_problem(ckpt, step) or 'complete'}"))
        if not training:
            found += [(c, problem) for c in checkpoints(folder) if (problem := checkpoint_problem(c))]
    return found
