"""Nothing lost wherever a run stops: SIGKILL a shortened recipes/demo-pipeline.yaml (SFT -> GRPO -> rejection SFT
-> GRPO) at moments spread over the whole run, `kit train --resume` after each kill, and compare with one
uninterrupted run of the same recipe: greedy answers to 100 held-out questions, metrics rows, the run's status.

    python benchmarks/kill_resume.py                       # every kill point in FULL (about 6 minutes on 2 cores)
    python benchmarks/kill_resume.py --kills step:1-sft/100,sampling:3-rejection_sft

The kills land exactly (KIT_TEST_KILL_AT, kit/killpoints.py): during each stage's steps, while a checkpoint is
written (transformers opens trainer_state.json, its last file: a torn checkpoint), while a stage adapter and the
final adapter are written, during rejection sampling, during evaluation during training. Prints kills survived /
tried, answers equal x/100, metrics rows duplicated and lost, and the minutes; exit code 1 when a target is missed
(every kill survived, >= 98/100 answers equal, no row duplicated or lost, the run finished). tests/test_kill.py
runs a short schedule of it in `make test`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "demo-pipeline.yaml"

# The demo pipeline, short: 120 warm-up steps (checkpoint at 60 and 120) give the rejection stage correct answers to
# keep; GRPO stages of 6 steps with a checkpoint and an evaluation every 3.
PIPELINE = [
    "stages=[{kind: sft, max_steps: 120}, {kind: grpo, max_steps: 6}, {kind: rejection_sft, questions: 64, "
    "samples_per_question: 4, max_steps: 6, learning_rate: 1.0e-4}, {kind: grpo, max_steps: 6}]",
    "sft.learning_rate=3e-3", "grpo.per_device_train_batch_size=32", "grpo.save_steps=3", "grpo.learning_rate=3e-4",
    "eval.every_steps=3", "eval.during_limit=16", "eval.samples=2",
]

# In the order the run reaches them. A kill point reached before a stage's first checkpoint restarts the stage.
FULL = [
    "step:1-sft/40",                                                     # SFT before its first checkpoint
    "write:stages/1-sft/checkpoints/checkpoint-60/trainer_state.json",  # SFT checkpoint torn: none complete
    "step:1-sft/100",                                                    # SFT after its checkpoint
    "write:stages/1-sft/adapter/adapter_config.json",                    # a stage adapter being written
    "eval:2-grpo/0",                                                     # evaluation before GRPO's first step
    "step:2-grpo/4",                                                     # GRPO after its checkpoint
    "write:stages/2-grpo/checkpoints/checkpoint-6/trainer_state.json",  # GRPO checkpoint torn
    "sampling:3-rejection_sft",                                          # rejection sampling
    "step:3-rejection_sft/4",                                            # its fine-tuning, after a checkpoint
    "write:stages/4-grpo/checkpoints/checkpoint-3/trainer_state.json",  # the last stage's first checkpoint torn
    "eval:4-grpo/6",                                                     # evaluation during training, last step
    "write:adapter/adapter_config.json",                                 # the final adapter being written
]
# tests/test_kill.py: a few kills over the whole run (make test)
SHORT = ["step:1-sft/100", "write:stages/2-grpo/checkpoints/checkpoint-6/trainer_state.json",
         "sampling:3-rejection_sft", "write:adapter/adapter_config.json"]

QUESTIONS = 100  # held-out (test split) questions whose greedy answers are compared


def _env(kill: str | None) -> dict:
    # One thread per trainer: the same arithmetic (CPU reductions depend on the thread count) however many run at
    # once, and the killed and the uninterrupted run can share the 2 cores.
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("KIT_TEST_KILL_AT", None)
    if kill:
        env["KIT_TEST_KILL_AT"] = kill
    return env


def train(run: Path, overrides: list[str], kill: str | None = None, resume: bool = False) -> int:
    """`kit train` (or `kit train --resume RUN`) in a subprocess, its output appended to RUN.log. Returns its exit
    code (-9: killed by the kill point)."""
    args = ["--resume", str(run)] if resume else [str(RECIPE), "--run-dir", str(run),
                                                   *[a for o in overrides for a in ("--set", o)]]
    log = run.with_name(run.name + ".log")
    with open(log, "a") as out:
        out.write(f"\n$ {'KIT_TEST_KILL_AT=' + kill + ' ' if kill else ''}kit train {' '.join(args)}\n")
        out.flush()
        return subprocess.run([sys.executable, "-m", "kit", "train", *args], cwd=ROOT, env=_env(kill),
                              stdout=out, stderr=subprocess.STDOUT).returncode


def killed_run(run: Path, overrides: list[str], kills: list[str]) -> dict:
    """Train with a SIGKILL at each of `kills` in turn, resuming after each, then resume to the end. A kill counts
    as survived when it did kill the trainer there and the resume that followed got on (to the next kill point
    or to a finished run)."""
    survived, codes = 0, []
    for i, kill in enumerate(kills):
        codes.append(train(run, overrides, kill, resume=i > 0))
        if codes[-1] != -signal.SIGKILL:  # the kill point was never reached, or the run failed before it
            break
        survived += i > 0  # the previous kill's resume got on to this kill point
    else:
        codes.append(train(run, overrides, resume=True))
        survived += codes[-1] == 0
    return {"tried": len(kills), "survived": survived, "exit_codes": codes}


def answers(run: Path, n: int = QUESTIONS) -> list[str]:
    """Greedy answers of the run's final adapter to the first `n` test questions."""
    from kit import runs
    from kit.models.engines import Generator
    from kit.models.loading import load_for_inference
    from kit.recipe import load_recipe
    from kit.task import data

    recipe = load_recipe(run / runs.RECIPE)
    _, _, engine = load_for_inference(recipe, run / runs.ADAPTER)
    gen = Generator(engine, data.template_kwargs(recipe.data))
    rows = data.questions(recipe.data, "test", n, shuffle=False)
    prompts = [data.to_prompt(r["question"], recipe.data.system_prompt) for r in rows]
    return [out[0] for out in gen.generate(prompts, recipe.grpo.max_completion_length, batch_size=50)]


def _kind(record: dict) -> str:
    for prefix in ("eval/", "rejection/"):
        if any(k.startswith(prefix) for k in record):
            return prefix[:-1]
    return "train"


def row_counts(run: Path) -> Counter:
    """(file, stage, step, run_step, kind) of every metrics and completions row: what a run logged, without the
    times."""
    from kit import runs
    from kit.runs import metrics

    counts = Counter()
    for name in (runs.METRICS, runs.COMPLETIONS):
        for r in metrics.read_jsonl(run / name):
            counts[(name, r.get("stage"), r.get("step"), r.get("run_step"), _kind(r))] += 1
    return counts


def compare(base: Path, run: Path) -> dict:
    """The killed run against the uninterrupted one."""
    from kit import runs
    from kit.runs import metrics

    a, b = answers(base), answers(run)
    want, got = row_counts(base), row_counts(run)
    base_rows = {(r["stage"], r["step"], _kind(r)): r for r in metrics.read_jsonl(base / runs.METRICS)}
    differ = sum(1 for r in metrics.read_jsonl(run / runs.METRICS)
                 if any(r.get(k) != base_rows.get((r["stage"], r["step"], _kind(r)), {}).get(k)
                        for k in ("loss", "reward", "eval/accuracy_strict", "rejection/kept")))
    return {
        "answers_equal": sum(x == y for x, y in zip(a, b)), "questions": len(a),
        "rows_duplicated": sum((got - want).values()), "rows_lost": sum((want - got).values()),
        "rows": sum(want.values()), "rows_with_other_values": differ,
        "status": runs.status(run), "base_status": runs.status(base),
        "torn_set_aside": len(runs.torn_checkpoints(run)),
    }


def measure(folder: Path, kills: list[str], overrides: list[str] = PIPELINE) -> dict:
    """The uninterrupted run and the killed one, side by side (one core each), then compared."""
    base, run = folder / "uninterrupted", folder / "killed"
    t0 = time.time()
    base_code = []

    def uninterrupted():
        base_code.append(train(base, overrides))
        base_code.append(round((time.time() - t0) / 60, 1))

    side = threading.Thread(target=uninterrupted)
    side.start()
    result = killed_run(run, overrides, kills)
    result["killed_minutes"] = round((time.time() - t0) / 60, 1)
    side.join()
    result["base_exit_code"], result["base_minutes"] = base_code
    if base_code[0] == 0 and result["exit_codes"][-1] == 0:
        result.update(compare(base, run))
    return result


def missed(result: dict) -> list[str]:
    """The targets a result misses (empty: all met)."""
    out = []
    if result["survived"] != result["tried"]:
        out.append(f"kills survived {result['survived']}/{result['tried']} (exit codes {result['exit_codes']})")
    if result.get("base_exit_code") != 0:
        out.append(f"the uninterrupted run failed (exit code {result.get('base_exit_code')})")
    if "answers_equal" not in result:
        return out
    if result["answers_equal"] < 98:
        out.append(f"answers equal {result['answers_equal']}/{result['questions']} (< 98)")
    if result["rows_duplicated"] or result["rows_lost"]:
        out.append(f"rows duplicated {result['rows_duplicated']}, lost {result['rows_lost']}")
    if result["status"] != "finished":
        out.append(f"the killed run ended {result['status']}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", help=f"comma-separated kill points (default: the {len(FULL)} of FULL)")
    p.add_argument("--out", default=None, help="folder for the two runs (default: a temporary one, removed)")
    args = p.parse_args()
    kills = args.kills.split(",") if args.kills else FULL
    import shutil
    import tempfile

    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kill-resume-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KIT_CACHE", str(folder / "cache"))
    t0 = time.time()
    try:
        result = measure(folder, kills)
    finally:
        if not args.out:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"kills survived:   {result['survived']}/{result['tried']}  ({', '.join(kills)})")
    if "answers_equal" in result:
        print(f"answers equal:    {result['answers_equal']}/{result['questions']} held-out questions, greedy")
        print(f"metrics rows:     {result['rows_duplicated']} duplicated, {result['rows_lost']} lost of "
              f"{result['rows']}; {result['rows_with_other_values']} with another loss/reward/eval value")
        print(f"run status:       {result['status']}; torn checkpoints set aside: {result['torn_set_aside']}")
    print(f"minutes:          {(time.time() - t0) / 60:.1f} in all; side by side, the uninterrupted run "
          f"{result['base_minutes']}, the killed one with its {len(result['exit_codes'])} processes "
          f"{result['killed_minutes']}")
    problems = missed(result)
    for line in problems:
        print(f"MISSED: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
