"""The app without a browser: its controller starts the embedded demo recipe as `kit train` in a subprocess, the
curves fill from the run's metrics, Stop saves an adapter, chat answers with it; overrides are validated like the
CLI's; one owner of the GPU at a time. (`import app` imports no torch: tests/test_layers.py.)"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit import runs
from kit.app import views
from kit.app.controller import OVERRIDE_FIELDS, Controller
from kit.errors import KitError, RecipeError
from kit.recipe import list_recipes, load_recipe
from kit.runs import metrics, plots

ROOT = Path(__file__).resolve().parent.parent
RECIPES = list_recipes(ROOT / "recipes")
# A short demo run: a few SFT steps so the tiny model writes something, then GRPO steps of 4 x 2 completions.
SHORT = ["sft.max_steps=4", "grpo.num_generations=4", "grpo.per_device_train_batch_size=8",
         "grpo.max_completion_length=32", "grpo.completions_every=1"]


def wait_for(condition, timeout: float, what: str, ctl=None, run=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if ctl is not None and run is not None and ctl.status(run) == "failed":
            pytest.fail(f"run failed while waiting for {what}: {ctl.message(run)}\n{runs.log_tail(run)}")
        time.sleep(0.5)
    tail = runs.log_tail(run) if run is not None else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@pytest.fixture
def ctl(tmp_path):
    c = Controller(ROOT / "recipes", tmp_path / "runs")
    yield c
    c.shutdown()


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_form_shows_the_recipe_values_and_adds_no_overrides(ctl, path):
    """The app holds no defaults: the pre-filled form of any recipe round-trips to zero overrides."""
    recipe = load_recipe(path)
    values = ctl.form_values(recipe)
    assert set(values) == set(OVERRIDE_FIELDS)
    assert values["grpo.max_steps"] == str(recipe.grpo.max_steps)
    assert ctl.overrides(path.stem, values) == []
    text = views.recipe_summary(recipe, path)
    assert recipe.model.name in text and recipe.description in text and "**expected VRAM**" in text


def test_demo_summary_shows_the_vram_estimate(ctl):
    assert "GiB peak" in views.recipe_summary(ctl.load("demo"), ROOT / "recipes" / "demo.yaml")


def test_changed_fields_become_validated_overrides(ctl):
    values = ctl.form_values(ctl.load("demo"))
    values["grpo.max_steps"] = "7"
    overrides = ctl.overrides("demo", values, "grpo.temperature=0.9\n# a comment\n--set grpo.beta=0.001")
    assert overrides == ["grpo.max_steps=7", "grpo.temperature=0.9", "grpo.beta=0.001"]
    recipe = ctl.load("demo", overrides)
    assert (recipe.grpo.max_steps, recipe.grpo.temperature, recipe.grpo.beta) == (7, 0.9, 0.001)
    command = ctl.command("demo", overrides)
    assert command.startswith("kit train ") and "recipes/demo.yaml --set grpo.max_steps=7" in command


@pytest.mark.parametrize("field, value, expect", [
    ("grpo.max_steps", "many", "grpo.max_steps: expected a whole number"),
    ("grpo.num_generations", "3", "grpo.num_generations"),
    ("grpo.learning_rate", "0", "grpo.learning_rate"),
    ("grpo.beta", "-1", "grpo.beta"),
    ("grpo.max_completion_length", "0", "grpo.max_completion_length"),
])
def test_bad_override_names_the_field_and_starts_nothing(ctl, field, value, expect):
    values = ctl.form_values(ctl.load("demo"))
    values[field] = value
    overrides = ctl.overrides("demo", values)
    with pytest.raises(RecipeError) as e:
        ctl.start("demo", overrides)
    assert expect in str(e.value)
    assert not ctl.runs_dir.exists() or not any(ctl.runs_dir.iterdir()), "an invalid run must not make a folder"


def test_an_empty_box_keeps_the_recipe_value(ctl):
    values = {name: "" for name in ctl.form_values(ctl.load("demo"))}
    values["grpo.max_steps"] = "9"
    assert ctl.overrides("demo", values) == ["grpo.max_steps=9"]


def test_unknown_recipe_and_unknown_field(ctl):
    with pytest.raises(RecipeError, match="recipe file not found"):
        ctl.load("no-such-recipe")
    with pytest.raises(RecipeError, match="did you mean `num_generations`"):
        ctl.load("demo", ctl.overrides("demo", {}, "grpo.num_generation=4"))


def fake_cli_run(runs_dir: Path, pid: int) -> Path:
    """A run folder as `kit train` in a terminal leaves it while training (this process plays the trainer)."""
    run = runs_dir / "demo-20260101-000000"
    run.mkdir(parents=True)
    (run / runs.RECIPE).write_text((ROOT / "recipes" / "demo.yaml").read_text())
    runs.write_summary(run, {"status": "running", "phase": "2-grpo: training", "pid": pid,
                             "host": os.uname().nodename, "run_step": 3, "max_steps": 120})
    return run


def test_chat_refuses_while_a_run_started_elsewhere_trains(ctl):
    run = fake_cli_run(ctl.runs_dir, os.getpid())
    assert ctl.training_run() == run
    with pytest.raises(KitError, match=f"{run.name} is training and holds the GPU"):
        ctl.load_chat(ROOT / "recipes" / "demo.yaml")
    assert ctl.chat is None
    assert "Chat is locked" in views.chat_status(ctl)
    with pytest.raises(KitError, match="still training"):
        ctl.start("demo", [])


def test_a_dead_trainer_frees_the_gpu(ctl):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = fake_cli_run(ctl.runs_dir, dead.pid)
    assert ctl.status(run) == "failed" and ctl.training_run() is None


@pytest.mark.slow
def test_start_watch_stop_then_chat_with_the_adapter(ctl):
    # --- Start: kit train in a subprocess, writing the run folder the app chose -----------------------------
    run = ctl.start("demo", SHORT + ["grpo.max_steps=200"])
    assert run.parent == ctl.runs_dir and run.name.startswith("demo-")
    assert ctl.status(run) == "running" and ctl.training_run() == run
    assert "--run-dir" in (run / runs.LOG).read_text().splitlines()[0]

    # --- One owner of the GPU: no chat model while it trains, no second run ------------------------------------
    with pytest.raises(KitError, match="is training and holds the GPU"):
        ctl.load_chat(ROOT / "recipes" / "demo.yaml")
    with pytest.raises(KitError, match="still training"):
        ctl.start("demo", SHORT)

    # --- Curves fill live, from metrics.jsonl, while it is still running --------------------------------------
    records = wait_for(lambda: (lambda r: r if metrics.series(r, "reward") else None)(
        metrics.read_jsonl(run / runs.METRICS)), 240, "the first GRPO reward", ctl, run)
    assert ctl.status(run) == "running"
    status = views.curve_status(ctl, run, records)
    assert "reward " in status and "GRPO points" in status, status
    fig = plots.figure(records, smoothing=0.6)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert {"Total reward", "Reward components", "Completion length", "Zero-std fraction",
            "Warm-up loss"} <= set(titles)
    assert "KL to reference" not in titles, "the demo trains with beta 0: no KL is logged, so no KL panel"
    row = next(r for r in views.runs_table(ctl, views.LastReward()) if r[0] == run.name)
    assert row[1] == "running" and row[3] != "-"

    # --- Completions with their per-reward scores ------------------------------------------------------------
    completions = wait_for(lambda: metrics.read_jsonl(run / runs.COMPLETIONS), 60, "sampled completions", ctl, run)
    columns, rows, caption = views.completions_table(run, completions, None)
    assert {"correctness", "format", "total", "advantage"} <= set(columns) and rows

    # --- Stop: SIGTERM, the trainer saves its adapter after the step and ends as "stopped" ---------------------
    assert "stopping" in ctl.stop()
    wait_for(lambda: ctl.status(run) != "running", 180, "the run to stop", ctl, run)
    assert ctl.status(run) == "stopped", ctl.message(run)
    assert runs.latest_adapter(run) is not None
    assert ctl.training_run() is None

    # --- Chat with the produced adapter: streamed, with the recipe's system prompt ----------------------------
    assert (run.name + " (trained adapter)", str(run)) in ctl.chat_sources()
    session = ctl.load_chat(run)
    assert session.adapter is not None
    system_prompt = load_recipe(run / runs.RECIPE).data.system_prompt
    assert session.messages([], "q")[0] == {"role": "system", "content": system_prompt}
    question = "Ava has 3 apples. Ava gets 4 more apples. How many apples does Ava have now?"
    pieces = list(session.stream([], question))
    assert pieces, "stream yields the growing answer"
    assert all(b.startswith(a) for a, b in zip(pieces, pieces[1:])), "each piece extends the one before"
    assert "extracted answer" in views.answer_line(pieces[-1])
    pairs = list(session.compare(question))
    base, trained = pairs[-1]
    assert trained == pieces[-1], "greedy: the trained side of compare is the chat answer"
    assert any(b and not t for b, t in pairs), "the base answer streams first"
    assert base != trained, "the base model (adapter off) answers differently from the trained adapter"

    # --- ...and while a chat model is loaded, no run starts --------------------------------------------------
    with pytest.raises(KitError, match="chat model is loaded"):
        ctl.start("demo", SHORT)
    assert "unloaded" in ctl.unload_chat() and ctl.chat is None
    with pytest.raises(RecipeError, match="grpo.max_steps"):  # past the GPU check now: validation speaks
        ctl.start("demo", ["grpo.max_steps=0"])


@pytest.mark.slow
def test_a_failing_run_shows_failed_with_its_message_and_log(ctl, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    run = ctl.start("demo", SHORT + [f"data.source={bad}"])
    wait_for(lambda: ctl.status(run) != "running", 240, "the run to fail")
    assert ctl.status(run) == "failed"
    assert "not valid JSON" in ctl.message(run)
    text, log = views.run_details(ctl, run)
    assert "**Error:**" in text and "not valid JSON" in log
    row = next(r for r in views.runs_table(ctl, views.LastReward()) if r[0] == run.name)
    assert row[1] == "failed" and "bad.jsonl" in row[4], "the table says why it failed"
    assert "Traceback" not in text


def test_completions_table_scores_and_totals(tmp_path):
    run = tmp_path / "demo-1"
    run.mkdir()
    (run / runs.RECIPE).write_text((ROOT / "recipes" / "demo.yaml").read_text())
    recipe = load_recipe(run / runs.RECIPE)
    good = "<reasoning>\n3 + 4 = 7\n</reasoning>\n<answer>\n7\n</answer>"
    record = {"step": 1, "run_step": 5, "stage": "2-grpo",
              "prompt": f"<|system|>\n{recipe.data.system_prompt}<|end|>\n<|user|>\nHow many?<|end|>",
              "completion": good, "rewards": {"correctness_reward": 1.0, "format_reward": 0.0}, "advantage": 0.5}
    (run / runs.COMPLETIONS).write_text(json.dumps(record) + "\n" + '{"step": 2, "run_st')  # half-written line
    columns, rows, caption = views.completions_table(run, metrics.read_jsonl(run / runs.COMPLETIONS), None)
    assert columns == ["question", "completion", "total", "correctness", "format", "advantage"]
    weights = {r.name: r.weight for r in recipe.rewards}
    assert rows[0][2] == weights["correctness_reward"] * 1.0
    assert rows[0][4] == 0.0, "a zero score is a value"
    assert "How many?" in rows[0][0] and "step 5" in caption


def test_curves_keep_zero_values_and_smooth():
    records = [{"step": i, "run_step": 10 + i, "stage": "2-grpo", "reward": v, "frac_reward_zero_std": 0.0}
               for i, v in enumerate([0.0, 0.0, 1.0], start=1)]
    data = plots.panel_series(records, plots.PANELS[0])
    assert data == {"reward": [(11, 0.0), (12, 0.0), (13, 1.0)]}
    fig = plots.figure(records, smoothing=0.5)
    zero_std = next(ax for ax in fig.axes if ax.get_title().startswith("Zero-std"))
    assert list(zero_std.lines[-1].get_ydata()) == [0.0, 0.0, 0.0]
    assert plots.figure([{"step": 1, "run_step": 1, "stage": "1-sft"}]) is None


@pytest.mark.slow
def test_stop_right_after_start_ends_stopped_not_failed(ctl):
    run = ctl.start("demo", SHORT)
    ctl.stop()
    wait_for(lambda: ctl.status(run) != "running", 120, "the run to end")
    assert ctl.status(run) == "stopped", ctl.message(run)
    assert ctl.message(run)


# ---------------------------------------------------------------------------------------------------------------
# Login: loopback stays login-free; any other host or a share link needs one


@pytest.mark.parametrize("host, share, needs", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False), ("127.0.0.1", True, True),
    ("0.0.0.0", False, True), ("192.168.1.20", False, True), ("my-box.local", False, True), ("::", False, True),
])
def test_login_is_required_beyond_loopback(host, share, needs):
    from kit.app.controller import login_for

    login = login_for(host, share, None, env={})
    assert (login is not None) == needs
    if needs:
        user, password, generated = login
        assert user == "kit" and len(password) >= 16 and generated
        assert login_for(host, share, None, env={})[1] != password  # random each start


def test_login_from_flag_or_environment():
    from kit.app.controller import login_for

    assert login_for("0.0.0.0", False, "ann:s3cret:with:colons", env={}) == ("ann", "s3cret:with:colons", False)
    assert login_for("0.0.0.0", False, None, env={"KIT_UI_AUTH": "bo:pw"}) == ("bo", "pw", False)
    assert login_for("127.0.0.1", False, "ann:pw", env={}) == ("ann", "pw", False)  # asked for: used on loopback too


@pytest.mark.parametrize("auth", ["nocolon", ":pw", "user:", ""])
def test_a_malformed_login_is_one_line_exit_2(auth, capsys):
    from kit import cli

    assert cli.main(["ui", "--host", "0.0.0.0", "--auth", auth]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --auth: expected USER:PASSWORD") and len(err.splitlines()) == 1
