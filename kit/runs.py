"""The run folder: the contract between the trainer and everything that reads a run (CLI, app, eval, export).

    runs/<name>-<YYYYmmdd-HHMMSS>/
      recipe.yaml        the resolved recipe (every field)
      summary.json       status (running/finished/failed/stopped), phase, steps, times, reward means
      metrics.jsonl      one object per log event: step, run_step, time, stage, and TRL's keys verbatim
      completions.jsonl  sample completions with their per-reward scores
      train.log          stdout/stderr when launched by the app
      adapter/           the final LoRA adapter + tokenizer
      stages/<i>-<kind>/ per stage: recipe.yaml, metrics.jsonl, adapter/, checkpoints/
      eval/              kit eval results

No torch here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kit.recipe import KitError

RECIPE, SUMMARY, METRICS, COMPLETIONS = "recipe.yaml", "summary.json", "metrics.jsonl", "completions.jsonl"
LOG, ADAPTER, STAGES, EVAL = "train.log", "adapter", "stages", "eval"
STATUSES = ("running", "finished", "failed", "stopped")


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
    try:
        data = json.loads((Path(run) / SUMMARY).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


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


def status(run: str | Path, summary: dict | None = None) -> str:
    """running / finished / failed / stopped. A run whose summary says running but whose process is gone (killed,
    machine rebooted) is reported as failed."""
    summary = read_summary(run) if summary is None else summary
    if not summary:  # missing or unreadable: nobody is keeping it current
        return "failed"
    state = summary.get("status", "failed")
    if state == "running" and summary.get("host") == os.uname().nodename and summary.get("pid"):
        if not _alive(int(summary["pid"])):
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
