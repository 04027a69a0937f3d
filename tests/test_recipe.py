"""Recipes: every file in recipes/ validates; every mistake is a RecipeError naming its field."""

import textwrap
from pathlib import Path

import pytest

from kit.recipe import (
    DEFAULT_REWARDS,
    Recipe,
    RecipeError,
    field_help,
    iter_fields,
    list_recipes,
    load_recipe,
    recipe_to_dict,
    save_recipe,
)
from kit.task import rewards

ROOT = Path(__file__).resolve().parent.parent
RECIPES = list_recipes(ROOT / "recipes")


def test_recipes_folder_is_not_empty():
    assert any(p.stem == "demo" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_and_documents_itself(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.run.name == path.stem
    assert recipe.description, "a recipe says in one line what it shows"
    header = path.read_text().splitlines()[:12]
    text = "\n".join(header).lower()
    assert header[0].startswith("#"), "recipes open with a header comment"
    assert "kit train" in text, "the header says how to run it"
    assert "--set" in text, "the header gives one override example"


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_resolved_recipe_round_trips(path, tmp_path):
    recipe = load_recipe(path)
    save_recipe(recipe, tmp_path / "recipe.yaml")
    assert load_recipe(tmp_path / "recipe.yaml") == recipe


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(text))
    return p


MINIMAL = """
model:
  name: builtin:tiny
data:
  source: builtin:arithmetic
"""


def error_of(tmp_path, text, overrides=()):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, text), overrides)
    return str(e.value)


def test_defaults_fill_a_minimal_recipe(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL))
    assert r.grpo.num_generations == 8 and r.rewards == DEFAULT_REWARDS and r.run.name == "r"


def test_unknown_key_suggests_the_right_one(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "grpo:\n  num_generation: 4\n")
    assert "grpo.num_generation" in msg and "did you mean `num_generations`" in msg


def test_unknown_section(tmp_path):
    assert "trainer: unknown field" in error_of(tmp_path, MINIMAL + "trainer: {}\n")


def test_wrong_type_names_field_and_value(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "grpo:\n  max_steps: many\n")
    assert "grpo.max_steps" in msg and "'many'" in msg and "whole number" in msg


def test_out_of_range(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "grpo:\n  epsilon: 1.5\n")
    assert "grpo.epsilon" in msg and "1.5" in msg and "<= 1.0" in msg
    assert "grpo.num_generations" in error_of(tmp_path, MINIMAL + "grpo:\n  num_generations: 1\n")


def test_bad_choice_suggests(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "model:\n  name: builtin:tiny\n  backend: unslot\n")
    assert "model.backend" in msg and "did you mean unsloth" in msg


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL + "grpo:\n  learning_rate: 5e-6\n"))
    assert r.grpo.learning_rate == 5e-6


def test_missing_required_model_name(tmp_path):
    assert "model.name: required" in error_of(tmp_path, "model: {}\n")


def test_unknown_reward(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "rewards:\n  - {name: correctnes_reward, weight: 1}\n")
    assert "rewards[0].name" in msg and "did you mean correctness_reward" in msg


def test_all_zero_weights(tmp_path):
    assert "every weight is 0" in error_of(tmp_path, MINIMAL + "rewards:\n  - {name: format_reward, weight: 0}\n")


def test_batch_not_divisible_by_generations(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "grpo:\n  num_generations: 6\n  per_device_train_batch_size: 8\n")
    assert "grpo.per_device_train_batch_size" in msg and "num_generations (6)" in msg


def test_prompt_plus_completion_longer_than_context(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "grpo:\n  max_prompt_length: 512\n  max_completion_length: 600\n")
    assert "model.max_seq_length (1024)" in msg


def test_missing_data_file(tmp_path):
    msg = error_of(tmp_path, "model:\n  name: builtin:tiny\ndata:\n  source: ./nope.jsonl\n")
    assert "data.source" in msg and "not found" in msg


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_not_yaml(tmp_path):
    assert "not valid YAML" in error_of(tmp_path, "model: [unclosed\n")


def test_yaml_is_read_safely(tmp_path):
    msg = error_of(tmp_path, "model: !!python/object/apply:os.system ['echo pwned']\n")
    assert "not valid YAML" in msg


def test_overrides_are_typed_and_validated(tmp_path):
    p = write(tmp_path, MINIMAL)
    r = load_recipe(p, ["grpo.max_steps=5", "grpo.learning_rate=1e-5", "model.load_in_4bit=false",
                        "rewards.format_reward=0"])
    assert r.grpo.max_steps == 5 and r.grpo.learning_rate == 1e-5 and r.model.load_in_4bit is False
    assert dict((s.name, s.weight) for s in r.rewards)["format_reward"] == 0.0
    with pytest.raises(RecipeError, match="grpo.max_steps"):
        load_recipe(p, ["grpo.max_steps=-3"])
    with pytest.raises(RecipeError, match="not of the form"):
        load_recipe(p, ["grpo.max_steps"])
    with pytest.raises(RecipeError, match="grpo.maxsteps: unknown field"):
        load_recipe(p, ["grpo.maxsteps=3"])


def test_stage_rules(tmp_path):
    base = MINIMAL + "stages:\n"
    assert "at least one grpo stage" in error_of(tmp_path, base + "  - {kind: sft}\n")
    msg = error_of(tmp_path, base + "  - {kind: grpo, judge: some/model}\n")
    assert "stages[0].judge" in msg
    r = load_recipe(write(tmp_path, base + "  - {kind: sft}\n  - {kind: grpo, max_steps: 3}\n"))
    assert [s.kind for s in r.pipeline()] == ["sft", "grpo"]


def test_every_field_has_help_with_substance():
    fields = list(iter_fields())
    assert len(fields) > 40
    for name, _, help_ in fields:
        assert len(help_) > 15, name
    assert "memory" in field_help("grpo.num_generations")


def test_recipe_to_dict_is_plain_data():
    r = load_recipe(ROOT / "recipes" / "demo.yaml")
    d = recipe_to_dict(r)
    assert isinstance(d["rewards"], list) and isinstance(d["model"]["lora_target_modules"], list)


@pytest.mark.parametrize("text, needle", [
    ("grpo:\n  learning_rate: .nan\n", "grpo.learning_rate: nan is not a finite number"),
    ("rewards:\n  - {name: correctness_reward, weight: .inf}\n", "rewards[0].weight: inf is not a finite"),
    ("grpo:\n  seed: 4294967296\n", "grpo.seed"),
    ("model:\n  name: builtin:tiny\n  lora_target_modules: []\n", "model.lora_target_modules: empty"),
])
def test_values_that_would_only_fail_after_loading_the_model(tmp_path, text, needle):
    base = MINIMAL if not text.startswith("model:") else ""
    assert needle in error_of(tmp_path, base + text)


def test_a_file_without_model_or_not_utf8_or_with_control_characters(tmp_path):
    assert "model: required field is missing" in error_of(tmp_path, "data:\n  limit: 5\n")
    assert "model: required field is missing" in error_of(tmp_path, "")
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"model:\n  name: caf\xe9\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(p)
    msg = error_of(tmp_path, "model:\n  name: a\x01b\n")
    assert "not valid YAML" in msg and "\n" not in msg


def test_reward_override_on_a_null_rewards_list(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL + "rewards: null\n"), ["rewards.correctness_reward=3"])
    assert [(s.name, s.weight) for s in r.rewards][0] == ("correctness_reward", 3.0)
    with pytest.raises(RecipeError, match="rewards: expected a list"):
        load_recipe(write(tmp_path, MINIMAL + "rewards: 5\n"), ["rewards.format_reward=1"])


def test_overrides_a_recipe_ignores_are_named():
    from kit.recipe import ineffective_overrides

    pipeline = load_recipe(ROOT / "recipes" / "demo-pipeline.yaml")
    notes = ineffective_overrides(pipeline, ["grpo.max_steps=3", "grpo.beta=0.01", "sft.max_steps=5"])
    assert notes == ["grpo.max_steps has no effect: each grpo stage in `stages` sets its own max_steps"]
    no_sft = load_recipe(ROOT / "recipes" / "qwen2.5-0.5b.yaml")
    assert "runs no sft stage" in ineffective_overrides(no_sft, ["sft.max_steps=5"])[0]
    assert ineffective_overrides(load_recipe(ROOT / "recipes" / "demo.yaml"), ["sft.max_steps=5",
                                                                              "grpo.max_steps=3"]) == []


# ---------------------------------------------------------------------------------------------------------------
# Your own task: reward files, field mappings, loggers


REWARD_FILE = "def brevity_reward(completions, **kwargs):\n    return [0.0 for _ in completions]\n"


def test_reward_file_and_data_file_resolve_from_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "mine.py").write_text(REWARD_FILE)
    (folder / "rows.csv").write_text("prompt,target\nWhat is 1 + 1?,2\n")
    recipe = folder / "r.yaml"
    recipe.write_text("model: {name: builtin:tiny}\ndata: {source: rows.csv, question_field: prompt, answer_field: "
                      "target, answer_format: number}\nrewards:\n  - {name: mine.py:brevity_reward, weight: 0.2}\n"
                      "  - {name: correctness_reward}\n")
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    r = load_recipe(recipe)
    assert r.data.source == str((folder / "rows.csv").resolve())
    assert r.rewards[0].name == f"{(folder / 'mine.py').resolve()}:brevity_reward"
    assert r.rewards[0].function == "brevity_reward"
    save_recipe(r, tmp_path / "saved.yaml")  # saved elsewhere, the resolved paths still work
    assert load_recipe(tmp_path / "saved.yaml") == r
    # rewards.<function>=w sets the weight of a user's reward by its function name
    assert load_recipe(recipe, ["rewards.brevity_reward=0.7"]).rewards[0].weight == 0.7


def test_reward_names_are_checked_at_load(tmp_path):
    (tmp_path / "mine.py").write_text(REWARD_FILE)
    # the file is found at load; what it defines is read when a run needs it (no user code runs to list a recipe)
    recipe = load_recipe(write(tmp_path, MINIMAL + "rewards:\n  - {name: mine.py:brevty_reward}\n"))
    with pytest.raises(RecipeError) as err:
        rewards.reward_functions(recipe)
    msg = str(err.value)
    assert "rewards[0].name" in msg and "no function 'brevty_reward'" in msg and "brevity_reward" in msg
    msg = error_of(tmp_path, MINIMAL + "rewards:\n  - {name: 'mine.py:'}\n")
    assert "not `file.py:function`" in msg
    (tmp_path / "fmt.py").write_text("def format_reward(completions, **kw):\n    return [0.0] * len(completions)\n")
    msg = error_of(tmp_path, MINIMAL + "rewards:\n  - {name: format_reward}\n  - {name: fmt.py:format_reward}\n")
    assert "format_reward listed twice" in msg and "rename" in msg


@pytest.mark.parametrize("text, needle", [
    ("data: {source: builtin:arithmetic, answer_format: latex}", "data.answer_format: 'latex' is not allowed"),
    ("data: {source: rows.txt}", "data.source"),
    ("run: {report_to: wandbb}", "did you mean wandb"),
    ("data: {source: builtin:arithmetic, answer_format: number}\nsft: {enabled: true}", "data.solution_field"),
])
def test_own_task_fields_are_validated(tmp_path, text, needle):
    assert needle in error_of(tmp_path, "model: {name: builtin:tiny}\n" + text + "\n")


def test_number_answers_with_worked_solutions_allow_sft(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL + "  answer_format: number\n  solution_field: working\nsft:\n"
                                              "  enabled: true\n"))
    assert r.data.solution_field == "working" and r.pipeline()[0].kind == "sft"
