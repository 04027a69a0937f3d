"""End to end on CPU: the embedded demo recipe trains through SFT warm-up and TRL's GRPOTrainer and leaves a run
folder that says what happened, with an adapter that reloads and generates."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit import runs
from kit.models.plan import plan as plan_for
from kit.recipe import load_recipe
from kit.runs import metrics

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_run_folder_contract(demo_run):
    assert (demo_run / runs.RECIPE).is_file() and load_recipe(demo_run / runs.RECIPE).grpo.max_steps == 4
    summary = runs.read_summary(demo_run)
    assert summary["status"] == "finished"
    assert [s["status"] for s in summary["stages"]] == ["finished", "finished"]
    assert summary["stages"][1]["steps"] == 4 and summary["run_step"] == 34
    assert summary["final"]["reward"] is not None


def test_metrics_hold_trl_keys_verbatim(demo_run):
    records = metrics.read_jsonl(demo_run / runs.METRICS)
    sft = [r for r in records if r["stage"] == "1-sft"]
    grpo = [r for r in records if r["stage"] == "2-grpo" and "reward" in r]
    evals = [r for r in records if "eval/accuracy_strict" in r]
    assert [r["step"] for r in evals] == [0, 4]  # held-out accuracy before and after GRPO
    assert sft and all("loss" in r for r in sft)
    assert [r["step"] for r in grpo] == [1, 2, 3, 4]
    assert [r["run_step"] for r in grpo] == [31, 32, 33, 34]
    for key in ("reward", "reward_std", "rewards/correctness_reward/mean", "rewards/format_reward/mean",
                "completions/mean_length", "completions/clipped_ratio", "frac_reward_zero_std", "loss",
                "learning_rate", "time"):
        assert all(key in r for r in grpo), key
    # the per-stage copy matches
    assert [r for r in metrics.read_jsonl(demo_run / runs.STAGES / "2-grpo" / runs.METRICS) if "reward" in r] == grpo


def test_completions_log_shows_per_reward_scores(demo_run):
    rows = metrics.read_jsonl(demo_run / runs.COMPLETIONS)
    assert rows and {r["step"] for r in rows} <= {1, 2, 4}
    first = rows[0]
    assert first["completion"] and set(first["rewards"]) == {r.name for r in load_recipe(demo_run / runs.RECIPE).rewards}
    from kit.task.rewards import score

    # the logged score is the reward of the logged text
    assert first["rewards"]["format_reward"] == score(first["completion"], "0", ["format_reward"])["format_reward"]


def test_adapter_reloads_and_generates(demo_run):
    from kit.models.engines import Generator
    from kit.models.loading import load_for_inference
    from kit.task import data

    recipe = load_recipe(demo_run / runs.RECIPE)
    _, _, engine = load_for_inference(recipe, demo_run / runs.ADAPTER)
    gen = Generator(engine)
    out = gen.generate([[{"role": "system", "content": recipe.data.system_prompt},
                         {"role": "user", "content": "Ava has 3 pens. Ava gets 4 more pens. How many pens does "
                                                     "Ava have now?"}]], max_new_tokens=32)
    assert isinstance(out[0][0], str) and out[0][0].strip()
    # adapter off: the base model's greedy answers, exactly as a plain load of the base model gives them
    rows = data.questions(recipe.data, "test", 4, shuffle=False)
    prompts = [data.to_prompt(r["question"], recipe.data.system_prompt) for r in rows] + [[{"role": "user",
                                                                                             "content": "hi"}]]
    trained = gen.generate(prompts, max_new_tokens=24)
    with gen.use_adapter(False):
        off = gen.generate(prompts, max_new_tokens=24)
    _, _, base_engine = load_for_inference(recipe, None)
    assert off == Generator(base_engine).generate(prompts, max_new_tokens=24)
    assert off != trained and gen.generate(prompts, max_new_tokens=24) == trained  # the adapter is back on
    # the adapter is trained, not its zero initialisation
    from safetensors.torch import load_file

    weights = load_file(str(demo_run / runs.ADAPTER / "adapter_model.safetensors"))
    assert any(float(t.abs().sum()) > 0 for k, t in weights.items() if "lora_B" in k)


def test_sigterm_stops_cleanly_and_resume_continues(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "kit", "train", str(ROOT / "recipes" / "demo.yaml"), "--run-dir", str(run),
           "--set", "sft.max_steps=4", "--set", "grpo.max_steps=400", "--set", "grpo.save_steps=1000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if any(r.get("stage") == "2-grpo" for r in metrics.read_jsonl(run / runs.METRICS)):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("GRPO never logged a step:\n" + proc.communicate()[0][-2000:])
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    summary = runs.read_summary(run)
    assert summary["status"] == "stopped" and "--resume" in summary["message"]
    assert (run / runs.ADAPTER / "adapter_model.safetensors").is_file()
    stopped_at = summary["stages"][1]["steps"]
    assert 0 < stopped_at < 400
    assert all(json.loads(line) for line in (run / runs.METRICS).read_text().splitlines())  # every line valid

    # resume: the stopped stage continues from the checkpoint saved at the stop, up to a new max_steps
    from kit.train.flow import train

    train(resume=run, overrides=[f"grpo.max_steps={stopped_at + 2}"])
    summary = runs.read_summary(run)
    assert summary["status"] == "finished"
    steps = [r["step"] for r in metrics.read_jsonl(run / runs.METRICS) if r.get("stage") == "2-grpo" and "reward" in r]
    assert steps == sorted(steps) and steps[-1] == stopped_at + 2 and len(steps) == len(set(steps))

    # resume may not change what the checkpoints were trained as; the saved recipe stays as it was
    from kit.errors import KitError

    saved = (run / runs.RECIPE).read_text()
    with pytest.raises(KitError, match="model cannot change on resume"):
        train(resume=run, overrides=["model.lora_rank=8"])
    with pytest.raises(KitError, match="cannot be set to 1"):
        train(resume=run, overrides=["grpo.max_steps=1"])
    assert (run / runs.RECIPE).read_text() == saved and runs.status(run) == "finished"

    # a finished run resumed with more steps trains them, from its final checkpoint
    train(resume=run, overrides=[f"grpo.max_steps={stopped_at + 3}"])
    summary = runs.read_summary(run)
    assert summary["status"] == "finished" and summary["stages"][1]["steps"] == stopped_at + 3
    steps = [r["step"] for r in metrics.read_jsonl(run / runs.METRICS) if r.get("stage") == "2-grpo" and "reward" in r]
    assert steps[-1] == stopped_at + 3 and len(steps) == len(set(steps))


def test_terminal_shows_a_short_line_about_20_times_not_a_dict_a_step(capsys):
    from transformers import TrainerState

    from kit.train.callbacks import CompactProgress

    state, bar = TrainerState(max_steps=100), CompactProgress()
    bar.on_train_begin(None, state, None)
    for step in range(1, 101):
        state.global_step = step
        bar.on_step_end(None, state, None)
        bar.on_log(None, state, None, logs={"loss": 0.0, "reward": step / 100, "rewards/correctness_reward/mean": 0.5,
                                            "completions/mean_length": 200.0, "num_tokens": 1e6, "epoch": 0.1})
    bar.on_log(None, state, None, logs={"train_runtime": 12.3, "train_loss": 0.0})
    bar.on_train_end(None, state, None)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[kit]")]
    assert len(lines) == 21 and "{" not in "".join(lines)
    assert lines[0] == "[kit] step 5/100  loss 0  reward 0.05  correct 0.5  len 200"
    assert lines[-2].startswith("[kit] step 100/100") and lines[-1] == "[kit] done: 100 steps in 12 s"


def test_resume_repairs_a_torn_last_line_and_cuts_logs_back_to_the_checkpoint(tmp_path, demo_run):
    import shutil

    from kit.train.tracker import Tracker

    run = tmp_path / "run"
    recipe = load_recipe(ROOT / "recipes" / "demo.yaml", ["run.name=t"])
    checkpoint = "2-grpo/checkpoints/checkpoint-2"  # a complete one: resume continues from it
    shutil.copytree(demo_run / runs.STAGES / checkpoint, run / runs.STAGES / checkpoint)
    runs.write_summary(run, {"status": "stopped", "stages": [
        {"name": "1-sft", "status": "finished", "steps": 400}, {"name": "2-grpo", "status": "stopped", "steps": 3}]})
    lines = [json.dumps({"stage": "2-grpo", "step": s, "reward": 1.0}) for s in (1, 2, 3)]
    (run / runs.METRICS).write_text("\n".join(lines) + '\n{"stage": "2-gr')  # killed mid-write
    (run / runs.COMPLETIONS).write_text("\n".join(lines) + "\n")
    Tracker(run, recipe, plan_for(recipe), resumed=True)
    for name in (runs.METRICS, runs.COMPLETIONS):
        text = (run / name).read_text()
        assert text.endswith("\n") and [r["step"] for r in metrics.read_jsonl(run / name)] == [1, 2], name


def test_a_run_without_a_readable_summary_is_not_running(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.RECIPE).write_text("model: {name: builtin:tiny}\n")
    assert runs.status(run) == "failed"
    (run / runs.SUMMARY).write_text('{"status": "finis')
    assert runs.status(run) == "failed"


def test_latest_stage_adapter_sorts_stages_by_number(tmp_path):
    for name in ("2-sft", "10-grpo"):
        (tmp_path / runs.STAGES / name / runs.ADAPTER).mkdir(parents=True)
        (tmp_path / runs.STAGES / name / runs.ADAPTER / "adapter_config.json").write_text("{}")
    assert runs.latest_adapter(tmp_path).parent.name == "10-grpo"
