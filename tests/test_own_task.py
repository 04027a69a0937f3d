"""Bring your own task: examples/own-task (a CSV with its own field names, reward functions from a file beside the
recipe) trains offline and logs the custom rewards like the built-ins; TensorBoard gets the same scalars; bad data,
bad rewards and a missing logger fail in one line before any model loads, and write nothing; a reward that crashes
mid-run fails the run with its name and the completion in summary.json."""

import doctest
import importlib.util
import json
import textwrap
from pathlib import Path

import pytest

from kit import cli, runs
from kit.errors import KitError
from kit.recipe import load_recipe
from kit.task import answers, arithmetic, data, rewards

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "own-task"
RECIPE = EXAMPLE / "recipe.yaml"
# A few seconds of each stage on 2 CPU cores: enough to see every reward logged.
SHORT = ["sft.max_steps=20", "grpo.max_steps=2", "grpo.num_generations=2", "grpo.per_device_train_batch_size=8",
         "grpo.max_completion_length=24", "grpo.completions_every=1", "grpo.save_steps=2"]
CUSTOM = ("brevity_reward", "right_unit_reward", "close_enough_reward")


def test_example_reward_file_doctests_pass():
    spec = importlib.util.spec_from_file_location("own_task_rewards", EXAMPLE / "my_rewards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module)
    assert result.attempted >= 3 and result.failed == 0


def test_example_recipe_maps_its_fields_and_resolves_paths_from_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths start at the recipe's folder, not the current directory
    r = load_recipe(RECIPE)
    assert Path(r.data.source).is_absolute() and r.data.question_field == "prompt"
    assert [x.function for x in r.rewards][-3:] == list(CUSTOM)
    assert all(Path(x.name.rpartition(":")[0]).is_file() for x in r.rewards if ":" in x.name)
    train, test = data.questions(r.data, "train"), data.questions(r.data, "test")
    assert len(train) == 64 and len(test) == 16  # {split} picks conversions-train.csv / conversions-test.csv
    assert not {q["question"] for q in train} & {q["question"] for q in test}
    row = next(q for q in train if q["question"] == "How many minutes are in 2 hours?")
    assert row["answer"] == "120" and row["solution"] == "2 h x 60 min per h = 120 min"
    rewards.check_rewards(r, train[0])


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    from kit.train.flow import train

    out = tmp_path_factory.mktemp("own-runs")
    return train(RECIPE, SHORT + [f"run.output_dir={out}", "run.report_to=tensorboard"])


@pytest.mark.slow
def test_example_trains_and_logs_custom_rewards(own_run):
    summary = runs.read_summary(own_run)
    assert summary["status"] == "finished"
    records = [json.loads(line) for line in (own_run / runs.METRICS).read_text().splitlines()]
    grpo = [r for r in records if r.get("stage") == "2-grpo"]
    for name in CUSTOM + ("correctness_reward",):
        values = [r[f"rewards/{name}/mean"] for r in grpo if f"rewards/{name}/mean" in r]
        assert values and all(0.0 <= v <= 1.0 for v in values), name
    completions = [json.loads(line) for line in (own_run / runs.COMPLETIONS).read_text().splitlines()]
    assert completions and set(CUSTOM) <= set(completions[0]["rewards"])
    # The run keeps the reward file, and its saved recipe points at the copy (relative to the run folder).
    copy = own_run / "rewards" / "my_rewards.py"
    assert copy.read_text() == (EXAMPLE / "my_rewards.py").read_text()
    saved = load_recipe(own_run / runs.RECIPE)
    assert {x.name.rpartition(":")[0] for x in saved.rewards if ":" in x.name} == {str(copy.resolve())}
    assert "rewards/my_rewards.py:brevity_reward" in (own_run / runs.RECIPE).read_text()


@pytest.mark.slow
def test_kit_show_tabulates_custom_rewards(own_run, capsys):
    assert cli.main(["show", str(own_run)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:2] == ["stage", "step"])
    assert all(name in header.split() for name in CUSTOM)


@pytest.mark.slow
def test_app_views_show_custom_rewards(own_run):
    from kit.app import views
    from kit.runs import metrics, plots

    columns, rows, _ = views.completions_table(own_run, metrics.read_jsonl(own_run / runs.COMPLETIONS), None)
    assert {"brevity", "right_unit", "close_enough"} <= set(columns) and rows
    panel = next(p for p in plots.PANELS if p.keys == ("rewards/*",))
    assert set(CUSTOM) <= set(plots.panel_series(metrics.read_jsonl(own_run / runs.METRICS), panel))


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_reward_scalars(own_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = sorted((own_run / "tensorboard").iterdir())
    assert [f.name for f in folders] == ["1-sft", "2-grpo"]
    events = EventAccumulator(str(own_run / "tensorboard" / "2-grpo"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for name in CUSTOM:
        scalars = events.Scalars(f"train/rewards/{name}/mean")
        assert len(scalars) == 2 and all(0.0 <= s.value <= 1.0 for s in scalars)
    assert "train/reward" in tags


@pytest.mark.slow
def test_resume_reads_the_copied_reward_file(own_run):
    from kit.train.flow import train

    assert train(resume=own_run) == own_run  # every stage finished: reloads, finds the copy, keeps the adapter
    assert runs.read_summary(own_run)["status"] == "finished"


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, before any model load, nothing written


def _task(tmp_path, rows_text: str, reward_code: str | None = None, suffix: str = ".jsonl", **data_fields) -> Path:
    (tmp_path / f"rows{suffix}").write_text(rows_text)
    fields = {"source": f"rows{suffix}", "question_field": "q", "answer_field": "a", "answer_format": "number",
              **data_fields}
    lines = "".join(f"  {k}: {v}\n" for k, v in fields.items())
    rewards_yaml = "  - {name: correctness_reward, weight: 1.0}\n"
    if reward_code is not None:
        (tmp_path / "mine.py").write_text(textwrap.dedent(reward_code))
        rewards_yaml += "  - {name: mine.py:mine_reward, weight: 0.5}\n"
    path = tmp_path / "task.yaml"
    path.write_text(f"model: {{name: builtin:tiny, load_in_4bit: false, fast_inference: false, max_seq_length: 256}}\n"
                    f"data:\n{lines}rewards:\n{rewards_yaml}"
                    f"grpo: {{num_generations: 2, per_device_train_batch_size: 2, max_steps: 1, "
                    f"max_completion_length: 16, max_prompt_length: 128}}\nrun: {{output_dir: {tmp_path / 'runs'}}}\n")
    return path


ROWS = '{"q": "What is 2 + 2?", "a": 4}\n{"q": "What is 3 + 4?", "a": "7"}\n'


def _fails(recipe: Path, capsys, *needles) -> str:
    assert cli.main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    assert not (recipe.parent / "runs").exists()  # nothing written: no run folder
    return err


@pytest.mark.parametrize("code, needles", [
    ("def mine_reward(completions, **kw):\n    raise ValueError('no')\n", ["mine.py:mine_reward", "ValueError"]),
    ("def mine_reward(completions, **kw):\n    return [1.0]\n", ["mine_reward", "1 values for 3 completions"]),
    ("def mine_reward(completions, **kw):\n    return [float('nan')] * len(completions)\n",
     ["mine_reward", "nan", "not a finite number"]),
    ("def mine_reward(completions, **kw):\n    return [None] * len(completions)\n", ["None", "not a finite"]),
    ("def mine_reward(completions, **kw):\n    return 'x'\n", ["returned str"]),
    ("def other_reward(completions, **kw):\n    return [0.0] * len(completions)\n",
     ["has no function 'mine_reward'", "it defines other_reward"]),
    ("import not_a_module_anywhere\n", ["importing", "mine.py:1", "ModuleNotFoundError"]),
    ("def mine_reward(completions:\n", ["mine.py:1", "SyntaxError"]),
    ("mine_reward = 3\n", ["is a int, not a function"]),
])
def test_bad_reward_is_one_line_before_any_model(tmp_path, capsys, code, needles):
    _fails(_task(tmp_path, ROWS, code), capsys, *needles)


def test_missing_reward_file_names_it(tmp_path, capsys):
    recipe = _task(tmp_path, ROWS)
    recipe.write_text(recipe.read_text().replace("weight: 1.0}", "weight: 1.0}\n  - {name: gone.py:f_reward}"))
    _fails(recipe, capsys, "rewards[1].name", "reward file not found: gone.py", str(tmp_path))


def test_missing_reward_module_names_it(tmp_path, capsys):
    recipe = _task(tmp_path, ROWS)
    recipe.write_text(recipe.read_text().replace("weight: 1.0}", "weight: 1.0}\n  - {name: nope_pkg.mod:f_reward}"))
    _fails(recipe, capsys, "cannot import module 'nope_pkg.mod'")


def test_a_field_that_is_not_there_lists_the_ones_that_are(tmp_path, capsys):
    _fails(_task(tmp_path, ROWS, question_field="prompt"), capsys, "data.question_field", "has no field 'prompt'",
           "its fields: q, a", "rows.jsonl:1")


def test_unparseable_golds_are_counted_with_the_first_line(tmp_path, capsys):
    rows = ROWS + '{"q": "x?", "a": "four"}\n{"q": "y?", "a": "n/a"}\n'
    _fails(_task(tmp_path, rows), capsys, "2 of 4 gold answers", "rows.jsonl:3", "'four'")


def test_an_empty_file_says_so(tmp_path, capsys):
    _fails(_task(tmp_path, "\n"), capsys, "no rows (the file is empty)")


@pytest.mark.parametrize("suffix, text", [
    (".csv", "q,a\nWhat is 2 + 2?,4\nWhat is 3 + 4?,seven\n"),
    (".json", '[{"q": "What is 2 + 2?", "a": 4}, {"q": "What is 3 + 4?", "a": "seven"}]'),
])
def test_csv_and_json_sources_point_at_the_bad_row(tmp_path, capsys, suffix, text):
    where = "rows.csv:3" if suffix == ".csv" else "rows.json[1]"
    _fails(_task(tmp_path, text, suffix=suffix), capsys, "1 of 2 gold answers", where, "'seven'")


def test_parquet_source_and_boxed_answers(tmp_path):
    import pyarrow
    import pyarrow.parquet

    table = pyarrow.table({"problem": ["a?", "b?"], "solution": ["so $\\boxed{\\frac{1}{2}}$", "x = \\boxed{1{,}000}"]})
    pyarrow.parquet.write_table(table, tmp_path / "rows.parquet")
    recipe = _task(tmp_path, "", suffix=".txt", source="rows.parquet", question_field="problem",
                   answer_field="solution", answer_format="boxed")
    rows = data.questions(load_recipe(recipe).data, "train", shuffle=False)
    assert [r["answer"] for r in rows] == ["0.5", "1000"] and rows[0]["solution"].startswith("so ")


def test_solution_field_is_the_warm_up_target_and_its_own_answer(tmp_path):
    rows_text = ('{"q": "2 boxes of 3?", "a": "2 * 3 = 6\\n#### 6", "t": "2 + 3 = 5\\n#### 5"}\n'
                 '{"q": "1 and 1?", "a": "1 + 1 = 2\\n#### 2", "t": "one and one make two"}\n')
    recipe = _task(tmp_path, rows_text, answer_format="gsm8k", solution_field="t")
    wrong, plain = data.questions(load_recipe(recipe).data, "train", shuffle=False)
    assert wrong["answer"] == "6" and wrong["solution_answer"] == "5"  # rewards see the gold, SFT the teacher
    assert answers.sft_target(wrong) == "<reasoning>\n2 + 3 = 5\n</reasoning>\n<answer>\n5\n</answer>"
    assert plain["solution_answer"] == "2" and answers.sft_target(plain, layout=False) == "one and one make two\nThe answer is 2."
    no_field = data.questions(load_recipe(_task(tmp_path, rows_text, answer_format="gsm8k")).data, "train", shuffle=False)
    assert [r["solution_answer"] for r in no_field] == ["6", "2"] and no_field[0]["solution"].startswith("2 * 3")


def test_the_demo_teacher_adds_instead_of_multiplying_on_some_questions():
    rows = arithmetic.arithmetic_rows("train")
    differ = [r for r in rows if r["teacher"] != r["answer"]]
    products = [r for r in rows if " * " in r["answer"]]
    assert all(" * " in r["answer"] for r in differ)  # it slips on multiplication only
    assert abs(len(differ) / len(products) - arithmetic.TEACHER_SLIP) < 0.05
    for r in differ:
        a, b = map(int, r["teacher"].split(" = ")[0].split(" + "))
        assert r["answer"].startswith(f"{a} * {b} = ") and answers.extract_hash_answer(r["teacher"]) == str(a + b)
    demo = data.questions(load_recipe(ROOT / "recipes" / "demo.yaml").data, "train", shuffle=False)
    assert sum(r["solution_answer"] != r["answer"] for r in demo) > 400  # the demo's warm-up imitates it


def test_missing_logger_names_the_package(tmp_path, capsys):
    missing = next((n for n in ("wandb", "trackio", "mlflow") if importlib.util.find_spec(n) is None), None)
    if missing is None:
        pytest.skip("every optional logger is installed here")
    recipe = _task(tmp_path, ROWS)
    assert cli.main(["train", str(recipe), "--set", f"run.report_to={missing}"]) == 2
    err = capsys.readouterr().err
    assert f"run.report_to={missing}" in err and f"pip install {missing}" in err
    assert not (tmp_path / "runs").exists()


def test_sft_on_bare_numbers_needs_worked_solutions(tmp_path):
    recipe = _task(tmp_path, ROWS)
    with pytest.raises(KitError, match="data.solution_field"):
        load_recipe(recipe, ["sft.enabled=true"])


# ---------------------------------------------------------------------------------------------------------------
# Mid-run: a reward that crashes after the pre-flight call fails the run with its name and the completion


@pytest.mark.slow
def test_reward_crash_mid_run_is_recorded_in_summary(tmp_path, capsys):
    code = """
    def mine_reward(completions, trainer_state, **kw):
        if trainer_state.global_step >= 1:  # the pre-flight call and step 1 pass; step 2 breaks
            raise ZeroDivisionError("division by zero in my reward")
        return [0.5] * len(completions)
    """
    recipe = _task(tmp_path, ROWS, code, answer_format="number")
    recipe.write_text(recipe.read_text().replace("max_steps: 1", "max_steps: 3"))
    assert cli.main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "reward" in err and "mine_reward" in err and "ZeroDivisionError" in err
    (run,) = (tmp_path / "runs").iterdir()
    summary = runs.read_summary(run)
    assert summary["status"] == "failed" and "mine_reward" in summary["error"]
    failure = summary["reward_failure"]
    assert failure["reward"].endswith("mine.py:mine_reward") and "ZeroDivisionError" in failure["error"]
    assert isinstance(failure["completion"], str) and repr(failure["completion"][:120]) in summary["error"]
    assert "mine.py" in (run / "error.log").read_text()  # the user's traceback, for the user's code


def test_listing_a_recipe_does_not_run_its_reward_file(tmp_path, capsys):
    """A recipe names its reward file; `kit list`, the app's form and load_recipe read the recipe without importing
    that file (user code runs when a run needs it: `kit train` imports it before any model loads)."""
    recipe = _task(tmp_path, ROWS, "open(__file__ + '.imported', 'w').close()\n"
                                   "def mine_reward(completions, **kw):\n    return [0.0] * len(completions)\n")
    assert load_recipe(recipe).rewards[1].name.endswith("mine.py:mine_reward")
    assert cli.main(["list", "--dir", str(tmp_path)]) == 0 and "task" in capsys.readouterr().out
    assert not (tmp_path / "mine.py.imported").exists()
    rewards.reward_functions(load_recipe(recipe))  # what a run does: now the file runs
    assert (tmp_path / "mine.py.imported").exists()
