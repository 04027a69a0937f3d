"""Resume after any stop: only from a complete checkpoint (a torn one is set aside and said so), from a run folder
that was moved, and after a full disk. The kill test over a whole pipeline is tests/test_kill.py."""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit import runs
from kit.app import views
from kit.errors import KitError
from kit.models.plan import plan as plan_for
from kit.recipe import load_recipe
from kit.runs import metrics

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("KIT_TEST_KILL_AT", None)
    env.update(extra)
    return env


def kit_train(*args, kill: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = _env(**({"KIT_TEST_KILL_AT": kill} if kill else {}))
    return subprocess.run([sys.executable, "-m", "kit", "train", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def steps_logged(run: Path, stage: str) -> list[int]:
    return [r["step"] for r in metrics.read_jsonl(run / runs.METRICS) if r.get("stage") == stage and "loss" in r]


# --- what counts as a complete checkpoint (real checkpoints of the shared demo run, torn by hand) ----------------


@pytest.fixture
def grpo_checkpoints(demo_run, tmp_path):
    """A copy of the demo run's GRPO checkpoints folder (checkpoint-2 and checkpoint-4, both complete)."""
    out = tmp_path / "checkpoints"
    shutil.copytree(demo_run / runs.STAGES / "2-grpo" / "checkpoints", out)
    assert [p.name for p in runs.checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    return out


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.slow
def test_a_checkpoint_counts_only_when_a_resume_finds_all_it_reads(grpo_checkpoints):
    ckpt = grpo_checkpoints / "checkpoint-4"
    assert runs.checkpoint_problem(ckpt) is None
    tears = {  # how a kill or a full disk leaves one, and what checkpoint_problem says
        "no trainer_state.json": lambda c: (c / "trainer_state.json").unlink(),
        "trainer_state.json is cut short": lambda c: _cut(c / "trainer_state.json"),
        "optimizer.pt is cut short": lambda c: _cut(c / "optimizer.pt", 0.99),
        "adapter_model.safetensors is cut short": lambda c: _cut(c / "adapter_model.safetensors", 0.99),
        "no scheduler.pt": lambda c: (c / "scheduler.pt").unlink(),
        "no rng_state.pth": lambda c: (c / "rng_state.pth").unlink(),
        "no adapter_config.json": lambda c: (c / "adapter_config.json").unlink(),
    }
    for i, (problem, tear) in enumerate(tears.items()):
        copy = grpo_checkpoints / f"torn{i}" / "checkpoint-4"
        shutil.copytree(ckpt, copy)
        tear(copy)
        assert runs.checkpoint_problem(copy) == problem
    renamed = grpo_checkpoints / "other" / "checkpoint-6"  # its trainer_state.json is step 4's
    shutil.copytree(ckpt, renamed)
    assert runs.checkpoint_problem(renamed) == "trainer_state.json says step 4"


@pytest.mark.slow
def test_resume_skips_a_torn_checkpoint_and_keeps_it_aside(grpo_checkpoints, capsys):
    from transformers.trainer_utils import get_last_checkpoint

    from kit.train.resume import resume_checkpoint

    (grpo_checkpoints / "checkpoint-4" / "trainer_state.json").unlink()  # torn while written
    assert resume_checkpoint(grpo_checkpoints, set_aside=False) == str(grpo_checkpoints / "checkpoint-2")
    assert (grpo_checkpoints / "checkpoint-4").is_dir() and capsys.readouterr().out == ""  # only looked

    assert resume_checkpoint(grpo_checkpoints) == str(grpo_checkpoints / "checkpoint-2")
    aside = grpo_checkpoints / runs.TORN / "checkpoint-4"
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"[kit] {grpo_checkpoints / 'checkpoint-4'} is torn (no trainer_state.json): skipped, kept as "
                     f"{aside}"]
    assert (aside / "adapter_model.safetensors").is_file()  # kept, not deleted
    # out of what transformers resumes and rotates from (its rotation globs checkpoint-* in the folder)
    assert list(grpo_checkpoints.glob("checkpoint-*")) == [grpo_checkpoints / "checkpoint-2"]
    assert get_last_checkpoint(str(grpo_checkpoints)) == str(grpo_checkpoints / "checkpoint-2")

    # none complete: nothing to resume from (the stage starts again)
    (grpo_checkpoints / "checkpoint-2" / "optimizer.pt").unlink()
    assert resume_checkpoint(grpo_checkpoints) is None
    assert sorted(p.name for p in (grpo_checkpoints / runs.TORN).iterdir()) == ["checkpoint-2", "checkpoint-4"]


@pytest.mark.slow
def test_logs_are_cut_back_to_the_last_complete_checkpoint(demo_run, tmp_path):
    from kit.train.resume import check_resume
    from kit.train.tracker import Tracker

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    grpo = run / runs.STAGES / "2-grpo" / "checkpoints"
    (grpo / "checkpoint-4" / "trainer_state.json").unlink()
    summary = runs.read_summary(run)
    summary["status"], summary["stages"][1]["status"] = "failed", "running"
    runs.write_summary(run, summary)
    recipe = load_recipe(run / runs.RECIPE)
    Tracker(run, recipe, plan_for(recipe), resumed=True)
    assert steps_logged(run, "2-grpo") == [1, 2]  # not 3 and 4: they are trained again from checkpoint-2
    assert (grpo / runs.TORN / "checkpoint-4").is_dir()
    evals = [r["step"] for r in metrics.read_jsonl(run / runs.METRICS) if "eval/accuracy_strict" in r]
    assert evals == [0]

    # no complete checkpoint: the stage starts again, so every row of it goes, its step-0 evaluation too
    (grpo / "checkpoint-2" / "rng_state.pth").unlink()
    Tracker(run, recipe, plan_for(recipe), resumed=True)
    assert [r for r in metrics.read_jsonl(run / runs.METRICS) if r["stage"] == "2-grpo"] == []
    assert steps_logged(run, "1-sft") == list(range(1, 31))

    # a finished stage can only be lengthened from a complete checkpoint
    finished = tmp_path / "finished"
    shutil.copytree(demo_run, finished)
    for ckpt in runs.checkpoints(finished / runs.STAGES / "2-grpo" / "checkpoints"):
        (ckpt / "trainer_state.json").unlink()
    longer = load_recipe(finished / runs.RECIPE, ["grpo.max_steps=6"])
    with pytest.raises(KitError, match="kept no checkpoint to continue from"):
        check_resume(finished, load_recipe(finished / runs.RECIPE), longer)


@pytest.mark.slow
def test_show_runs_and_the_app_say_a_run_holds_a_torn_checkpoint(demo_run, tmp_path):
    from kit.app.controller import Controller

    run = tmp_path / "runs" / demo_run.name
    shutil.copytree(demo_run, run)
    ckpt = run / runs.STAGES / "2-grpo" / "checkpoints" / "checkpoint-4"
    (ckpt / "optimizer.pt").unlink()
    show = subprocess.run([sys.executable, "-m", "kit", "show", str(run)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert show.returncode == 0, show.stderr
    assert ("torn     stages/2-grpo/checkpoints/checkpoint-4 (no optimizer.pt; --resume skips it, continuing from "
            "the last complete one)") in show.stdout.splitlines()
    listed = subprocess.run([sys.executable, "-m", "kit", "runs", "--dir", str(run.parent)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60).stdout
    assert "finished (1 torn checkpoint)" in listed
    ctl = Controller(ROOT / "recipes", run.parent)
    details, _ = views.run_details(ctl, run)
    assert "torn checkpoint: `stages/2-grpo/checkpoints/checkpoint-4` (no optimizer.pt)" in details
    runs.set_aside(ckpt)  # as --resume does: still said, as set aside
    assert runs.torn_checkpoints(run) == [(ckpt.parent / runs.TORN / "checkpoint-4", "set aside: no optimizer.pt")]
    show = subprocess.run([sys.executable, "-m", "kit", "show", str(run)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60).stdout
    assert "torn     stages/2-grpo/checkpoints/torn/checkpoint-4 (set aside: no optimizer.pt)" in show.splitlines()


# --- a run folder that moves (the Colab notebooks keep runs on Google Drive) -------------------------------------


def test_a_copied_summary_reads_as_its_new_folder(tmp_path):
    old, new = tmp_path / "local" / "r", tmp_path / "drive" / "r"
    old.mkdir(parents=True)
    (old / runs.RECIPE).write_text("model: {name: builtin:tiny}\n")
    runs.write_summary(old, {"status": "running", "run": str(old), "pid": os.getpid(), "host": os.uname().nodename,
                             "message": f"stopped; continue with: kit train --resume {old}"})
    shutil.copytree(old, new)
    assert runs.status(old) == "running"  # this process is alive and writes the original
    assert runs.status(new) == "failed"  # nobody writes the copy: it can be resumed
    assert runs.read_summary(new)["message"] == f"stopped; continue with: kit train --resume {new}"
    assert runs.read_summary(old)["message"] == f"stopped; continue with: kit train --resume {old}"


def test_a_run_left_running_by_a_machine_that_went_away_reads_as_failed(tmp_path):
    """A Colab session ended mid-run: its summary on Drive still says running, on a host that is not this one.
    The trainer's heartbeat (every minute, from a thread) tells it from a run still training there."""
    run = tmp_path / "r"
    run.mkdir()
    (run / runs.RECIPE).write_text("model: {name: builtin:tiny}\n")
    runs.write_summary(run, {"status": "running", "run": str(run), "pid": 4242, "host": "colab-machine-that-is-gone"})
    assert runs.status(run) == "running"  # no heartbeat (a run from before it): cannot tell, trusted
    runs.beat(run)
    assert runs.status(run) == "running" and abs(runs.last_beat(run) - time.time()) < 5
    (run / runs.HEARTBEAT).write_text(f"{time.time() - 3 * runs.HEARTBEAT_S - 10:.0f}\n")
    assert runs.status(run) == "failed"  # silent for more than 3 beats: resumable


@pytest.mark.slow
def test_sft_torn_twice_then_moved_resumes_from_its_new_folder(tmp_path):
    """SFT killed while its first checkpoint is written (none complete: it starts again, and says so), then
    while its second is (it continues from the first); the folder is then copied to another disk, the original
    deleted, and the copy resumes, is listed by the app, and names no old path."""
    old = tmp_path / "local" / "runs" / "r"
    short = sets("sft.max_steps=20", "grpo.max_steps=4", "grpo.save_steps=2", "grpo.num_generations=4",
                 "grpo.per_device_train_batch_size=8", "eval.every_steps=0")
    first = kit_train(ROOT / "recipes" / "demo.yaml", "--run-dir", old, *short,
                      kill="write:stages/1-sft/checkpoints/checkpoint-10/trainer_state.json")
    assert first.returncode == -9, first.stdout[-2000:] + first.stderr[-2000:]
    second = kit_train("--resume", old, kill="write:stages/1-sft/checkpoints/checkpoint-20/trainer_state.json")
    assert second.returncode == -9, second.stdout[-2000:] + second.stderr[-2000:]
    ckpts = old / runs.STAGES / "1-sft" / "checkpoints"
    assert f"[kit] {ckpts / 'checkpoint-10'} is torn (no trainer_state.json): skipped, kept as " \
           f"{ckpts / runs.TORN / 'checkpoint-10'}" in second.stdout
    assert "[kit] 1-sft: no complete checkpoint to continue from: the stage starts again from step 0" in second.stdout

    new = tmp_path / "drive" / "MyDrive" / "runs" / "r"
    shutil.copytree(old, new)
    shutil.rmtree(tmp_path / "local")  # nothing may read the old place
    from kit.app.controller import Controller

    ctl = Controller(ROOT / "recipes", new.parent)
    assert ctl.run_folders() == [new] and ctl.status(new) == "failed"
    rows = views.runs_table(ctl, views.LastReward())
    assert rows[0][:2] == ["r", "failed"]
    details, _ = views.run_details(ctl, new)
    assert f"- folder: `{new}`" in details and "stages/1-sft/checkpoints/checkpoint-20" in details

    third = kit_train("--resume", new)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    nckpts = new / runs.STAGES / "1-sft" / "checkpoints"
    assert f"[kit] {nckpts / 'checkpoint-20'} is torn (no trainer_state.json): skipped, kept as " \
           f"{nckpts / runs.TORN / 'checkpoint-20'}" in third.stdout
    summary = runs.read_summary(new)
    assert summary["status"] == "finished" and summary["run"] == str(new.resolve()) and "trained_in" not in summary
    assert steps_logged(new, "1-sft") == list(range(1, 21)) and steps_logged(new, "2-grpo") == [1, 2, 3, 4]
    assert runs.status(new) == "finished" and views.runs_table(ctl, views.LastReward())[0][1] == "finished"
    assert time.time() - runs.last_beat(new) < 600  # the trainer beat while it lived
    # no text file of the run folder names where it was trained
    for path in new.rglob("*"):
        if path.suffix in (".json", ".jsonl", ".yaml") and runs.TORN not in path.parts:
            assert str(old) not in path.read_text(errors="replace"), path


# --- a full disk ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 128 MiB tmpfs (the run needs about 60): a disk that can fill up. Needs root (CI runs as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root); not root here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the disk with one ballast file, then give back `leave` bytes."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 2**20)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    os.truncate(ballast, max(0, ballast.stat().st_size - leave))
    return ballast


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_resumes_once_space_is_back(small_disk):
    run = small_disk / "runs" / "r"
    cmd = [sys.executable, "-m", "kit", "train", str(ROOT / "recipes" / "demo.yaml"), "--run-dir", str(run),
           *sets(f"run.output_dir={small_disk / 'runs'}", "sft.max_steps=10", "grpo.max_steps=8", "grpo.save_steps=2",
                 "grpo.num_generations=4", "grpo.per_device_train_batch_size=8", "eval.every_steps=0")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(r.get("stage") == "2-grpo" for r in metrics.read_jsonl(run / runs.METRICS)):
        assert proc.poll() is None and time.time() < deadline, "GRPO never logged a step"
        time.sleep(0.2)
    ballast = _fill(small_disk, leave=512 * 1024)  # GRPO's next checkpoint (9 MiB) cannot be written
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, out[-2000:] + err[-3000:]
    errors = [line[line.index("error: "):] for line in err.splitlines() if "error: " in line]  # after tqdm's bar
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert f"the disk is full: {run} has " in errors[0] and " MiB free" in errors[0]
    assert f"kit train --resume {run}" in errors[0]

    # what was written before is whole: every metrics line, the last complete checkpoint of each stage
    for name in (runs.METRICS, runs.COMPLETIONS):
        assert not metrics.torn(run / name)
        assert all(json.loads(line) for line in (run / name).read_text().splitlines())
    logged = steps_logged(run, "2-grpo")
    assert logged == sorted(set(logged)) and logged
    complete = [c for c in runs.checkpoints(run / runs.STAGES / "1-sft" / "checkpoints")
                if runs.checkpoint_problem(c) is None]
    assert [c.name for c in complete] == ["checkpoint-5", "checkpoint-10"]

    ballast.unlink()  # space is back
    done = kit_train("--resume", run)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert runs.read_summary(run)["status"] == "finished"
    assert all(runs.TORN in c.parts for c, _ in runs.torn_checkpoints(run))  # one the disk tore is set aside
    assert steps_logged(run, "2-grpo") == list(range(1, 9))
    assert steps_logged(run, "1-sft") == list(range(1, 11))


# --- make gpu-check on a fresh clone -------------------------------------------------------------------------


def test_gpu_check_makes_the_venv_it_needs_or_says_what_to_give(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # run as a user would, not as a sub-make of `make test` (which would print "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    fresh = tmp_path / "no-venv"  # a fresh clone: no .venv
    plan = subprocess.run(["make", "-n", "gpu-check", f"VENV={fresh}"], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    lines = plan.stdout.splitlines()
    assert plan.returncode == 0, plan.stderr
    made = next(i for i, line in enumerate(lines) if line.endswith(f"-m venv {fresh}"))
    runs_check = next(i for i, line in enumerate(lines) if "scripts/gpu_check.py" in line)
    assert made < runs_check and lines[runs_check].startswith(f"{fresh}/bin/python scripts/gpu_check.py")
    # the GPU machine: its own python3, no venv made
    gpu = subprocess.run(["make", "-n", "gpu-check", "GPU_PYTHON=python3", f"VENV={fresh}"], cwd=ROOT,
                         capture_output=True, text=True, env=env).stdout
    assert "-m venv" not in gpu and "\npython3 scripts/gpu_check.py --out bench/gpu-check" in gpu
    # an interpreter without torch: one line says what to give, exit 2 (with .whl there it would install first)
    if (ROOT / ".whl").is_dir():
        return
    bare = subprocess.run(["make", "gpu-check", f"GPU_PYTHON={sys.executable} -I -S"], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert bare.returncode != 0
    assert bare.stdout.strip().splitlines() == [
        f"make gpu-check: {sys.executable} -I -S cannot import torch and kit; give GPU_PYTHON=<a python with "
        "torch>, or leave it unset to install and use .venv"]
