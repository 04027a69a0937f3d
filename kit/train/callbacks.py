"""Trainer callbacks that write the run folder and stop cleanly. They configure TRL; they don't patch it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from kit.eval.evaluate import evaluate
from kit.models import compat
from kit.models.engines import Generator
from kit.runs.metrics import JsonlWriter
from kit.task import data
from kit.train import killpoints


class StopCallback(TrainerCallback):
    def __init__(self, flag):  # a kit.train.tracker.StopFlag
        self.flag = flag

    def on_step_end(self, args, state, control, **kwargs):
        if self.flag.requested:
            control.should_save = True  # a checkpoint `--resume` can continue from
            control.should_training_stop = True


class MetricsCallback(TrainerCallback):
    """One JSON object per log event: `step` (the stage's), `run_step` (across stages), wall `time`, `stage`, and
    TRL's keys verbatim (a GRPO `step_time` that this TRL does not log is filled in: kit.models.compat.fill_step_time)."""

    def __init__(self, writer: JsonlWriter, stage: str, offset: int, on_step: Callable[[int], None]):
        self.writer, self.stage, self.offset, self.on_step = writer, stage, offset, on_step
        self.t0 = time.time()
        self._step_t0, self._step_s = None, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "total_flos" in logs or "train_runtime" in logs:  # the end-of-training summary line
            return
        record = {"step": state.global_step, "run_step": self.offset + state.global_step,
                  "time": round(time.time(), 3), "elapsed_s": round(time.time() - self.t0, 3),
                  "stage": self.stage, **compat.fill_step_time(logs, self._step_s)}
        self.writer.write(record)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_t0 is not None:
            self._step_s = time.perf_counter() - self._step_t0
        self.on_step(state.global_step)


class CompletionsCallback(TrainerCallback):
    """Every `every` steps, writes up to `n` of the latest sampled completions with their per-reward scores and
    advantage, so reward hacking is visible. Reads GRPOTrainer's buffer of the last generation batch (`_logs`,
    the same one TRL prints its completions table from); the trainer is attached after it is built."""

    def __init__(self, writer: JsonlWriter, stage: str, offset: int, every: int, n: int = 8):
        self.writer, self.stage, self.offset, self.every, self.n = writer, stage, offset, every, n
        self.trainer = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "train_runtime" in (logs or {}):  # the end-of-training summary line: same batch again
            return
        step = state.global_step
        if not self.every or self.trainer is None or (step % self.every and step != 1):
            return
        buf = self.trainer._logs
        prompts, completions = list(buf["prompt"]), list(buf["completion"])
        rewards = {name: list(values) for name, values in buf["rewards"].items()}
        advantages = list(buf["advantages"])
        for i in range(min(self.n, len(completions))):
            self.writer.write({
                "step": step, "run_step": self.offset + step, "stage": self.stage, "time": round(time.time(), 3),
                "prompt": prompts[i], "completion": completions[i],
                "rewards": {name: values[i] for name, values in rewards.items() if i < len(values)},
                "advantage": advantages[i] if i < len(advantages) else None,
            })


class EvalCallback(TrainerCallback):
    """Held-out accuracy during training: greedy answers to a fixed subset (eval.during_limit questions of
    eval.split) at the start and every eval.every_steps steps, logged as eval/accuracy_strict,
    eval/accuracy_lenient, eval/format_rate; with eval.samples = K > 1 also eval/pass@1 and eval/pass@K (strict)
    from K sampled answers per question."""

    def __init__(self, recipe, tokenizer, writer: JsonlWriter, stage: str, offset: int, scratch: str):
        self.scratch = scratch
        self.recipe, self.tokenizer, self.writer, self.stage, self.offset = recipe, tokenizer, writer, stage, offset
        self.rows = data.questions(recipe.data, recipe.eval.split, recipe.eval.during_limit, shuffle=False)

    def _evaluate(self, model, step: int) -> None:
        e = self.recipe.eval
        gen = Generator.of_training_model(model, self.tokenizer, Path(self.scratch),
                                          data.template_kwargs(self.recipe.data))
        k = e.samples if e.samples > 1 else 0
        summary, _ = evaluate(gen, self.rows, self.recipe.data.system_prompt,
                              e.max_new_tokens or self.recipe.grpo.max_completion_length, e.batch_size,
                              progress=False, samples=k, temperature=e.temperature, seed=self.recipe.grpo.seed)
        record = {"step": step, "run_step": self.offset + step, "time": round(time.time(), 3), "stage": self.stage,
                  "eval/accuracy_strict": summary["accuracy_strict"],
                  "eval/accuracy_lenient": summary["accuracy_lenient"], "eval/format_rate": summary["format_rate"],
                  "eval/mean_length": summary["mean_length"], "eval/n": summary["n"]}
        line = (f"[kit] eval at step {step}: strict {summary['accuracy_strict']:.1%}, lenient "
                f"{summary['accuracy_lenient']:.1%}, format {summary['format_rate']:.1%}")
        if k:
            record.update({"eval/pass@1": summary["pass@1"], f"eval/pass@{k}": summary[f"pass@{k}"],
                           "eval/samples": k})
            line += f", pass@1 {summary['pass@1']:.1%}, pass@{k} {summary[f'pass@{k}']:.1%} (strict)"

        killpoints.reached("eval", f"{self.stage}/{step}")  # test-only: answers scored, not yet logged
        self.writer.write(record)
        print(line + f" (n={summary['n']})", flush=True)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self._evaluate(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        every = self.recipe.eval.every_steps
        if state.global_step % every == 0 or state.global_step == state.max_steps:
            self._evaluate(model, state.global_step)


class CompactProgress(ProgressCallback):
    """The terminal progress bar with the latest values in its postfix and one short line about 20 times a stage,
    instead of TRL's dict of ~40 keys every step (metrics.jsonl keeps everything; `kit show` tabulates it)."""

    SHORT = {"loss": "loss", "reward": "reward", "rewards/correctness_reward/mean": "correct",
             "rewards/format_reward/mean": "format", "completions/mean_length": "len", "kl": "kl",
             "mean_token_accuracy": "token_acc", "learning_rate": "lr"}

    def __init__(self, lines: int = 20):
        super().__init__()
        self.lines = lines

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        short = {name: f"{logs[k]:.3g}" for k, name in self.SHORT.items() if isinstance(logs.get(k), (int, float))}
        if short:
            self.training_bar.set_postfix(short, refresh=False)
        every = max(1, state.max_steps // self.lines)
        if "train_runtime" in logs:
            self.training_bar.write(f"[kit] done: {state.global_step} steps in {logs['train_runtime']:.0f} s")
        elif short and (state.global_step % every == 0 or state.global_step == state.max_steps):
            values = "  ".join(f"{k} {v}" for k, v in short.items())
            self.training_bar.write(f"[kit] step {state.global_step}/{state.max_steps}  {values}")


def use_compact_progress(trainer) -> None:
    """Swap the trainer's terminal bar for CompactProgress (notebooks keep their own progress table)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(CompactProgress())
