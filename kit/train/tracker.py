"""The run's bookkeeping while it trains: summary.json kept current (status, phase, steps, reward means), the
heartbeat, the metrics writers; and the one-line explanation of a failure."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

from kit import runs
from kit.models.plan import Plan
from kit.recipe import Recipe, StageSpec
from kit.runs import metrics
from kit.train import killpoints
from kit.train.log import say
from kit.train.resume import resume_checkpoint


class Tracker:
    """Keeps summary.json current (status, phase, steps, reward means) and owns the metrics writers."""

    def __init__(self, run: Path, recipe: Recipe, plan: Plan, resumed: bool, main: bool = True):
        self.run, self.recipe, self.main = run, recipe, main
        previous = runs.read_summary(run) if resumed else {}
        done = {s["name"]: s for s in previous.get("stages", [])}
        stages = []
        for i, s in enumerate(recipe.pipeline()):
            name = f"{i + 1}-{s.kind}"
            before = done.get(name, {})
            wanted = recipe.stage_steps(s)
            status = before.get("status", "pending")
            if status == "finished" and before.get("steps", 0) < wanted:  # resumed with more steps (check_resume)
                status = "stopped"
            stages.append({"name": name, "kind": s.kind, "status": status, "steps": before.get("steps", 0),
                           "max_steps": wanted})
        self.t0 = time.time()
        self.summary = {
            "status": "running", "phase": "starting", "run": str(Path(run).resolve()), "recipe": recipe.run.name,
            "description": recipe.description, "model": recipe.model.name, "backend": plan.backend,
            "device": plan.hardware.name, "plan": plan.record(), "notes": list(plan.notes),
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
            ckpt = resume_checkpoint(self.run / runs.STAGES / s["name"] / "checkpoints")
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
            say(f"could not write {self.run / runs.SUMMARY}: {e}")


def count_params(model) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{total / 1e6:.2f}M parameters, {trainable / 1e6:.2f}M trainable"


def explain(e: Exception, run: Path | None = None) -> str:
    text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    free = disk_full(e, run) if run is not None else None
    if free is not None:
        return (f"the disk is full: {run} has {free / 2**20:.1f} MiB free ({text[:120]}); the last "
                f"complete checkpoint and the logs are kept: free some space (torn checkpoints set aside in "
                f"stages/*/checkpoints/{runs.TORN}/ can go), then continue with: kit train --resume {run}")
    if "out of memory" in str(e).lower():
        return (f"{text} -> the GPU ran out of memory; lower grpo.num_generations, grpo.max_completion_length or "
                "model.gpu_memory_utilization (kit fit RECIPE estimates the peak)")
    return text


def disk_full(e: BaseException, run: Path) -> int | None:
    """Free bytes at `run` when `e` is a full disk, else None. Python and safetensors say ENOSPC; torch.save only
    says its stream failed ("unexpected pos", "iostream error"), so that counts when the disk is indeed nearly
    full (the torn file has taken the rest)."""

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


class StopFlag:
    """Set by SIGINT/SIGTERM; the training loop stops at the end of the current step and saves. A second Ctrl-C
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""

    def install(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\n[kit] {self.signal_name}: stopping after this step and saving (Ctrl-C again to abort)",
              flush=True)
