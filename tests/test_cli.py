"""The `kit` command: bad input is one line on stderr and exit code 2, never a traceback."""

from pathlib import Path

import pytest
from helpers import kit

ROOT = Path(__file__).resolve().parent.parent


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args, needles", [
    (["train", "recipes/nope.yaml"], ["recipe file not found", "demo.yaml"]),
    (["train", "recipes/demo.yaml", "--set", "grpo.num_generation=4"], ["grpo.num_generation", "num_generations"]),
    (["train", "recipes/demo.yaml", "--set", "grpo.beta=-1"], ["grpo.beta", "-1"]),
    (["train", "recipes/demo.yaml", "--set", "model.backend=unsloth"], ["model.backend", "CUDA"]),
    (["train", "recipes/demo.yaml", "--set", "grpo.per_device_train_batch_size=7"], ["num_generations"]),
    (["train"], ["--resume"]),
    (["show", "recipes"], ["not a run folder"]),
    (["show", "runs/does-not-exist"], ["not found"]),
    (["eval", "recipes/nope.yaml"], ["recipe file not found"]),
    (["eval", "nowhere"], ["neither a recipe file nor a run folder"]),
    (["compare", "kit"], ["not a run folder"]),
    (["fields", "nosuch"], ["unknown section"]),
    (["eval", "recipes/demo.yaml", "--limit", "0"], ["--limit", "above 0"]),
    (["fit", "recipes/demo.yaml", "--gpu-memory", "nan"], ["--gpu-memory"]),
    (["train", "--no-such-flag"], ["unrecognized arguments", "--no-such-flag"]),
    (["frob"], ["invalid choice"]),
])
def test_bad_input_is_one_line_exit_2(args, needles):
    assert_one_line_error(kit(*args), *needles)


def test_bad_recipe_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: builtin:tiny\ngrpo:\n  learning_rate: fast\n")
    assert_one_line_error(kit("train", str(bad)), "grpo.learning_rate", "'fast'")
    assert not (ROOT / "runs" / "bad").exists()


def test_argparse_errors_exit_2():
    result = kit("train", "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_list_shows_every_recipe():
    result = kit("list")
    assert result.returncode == 0, result.stderr
    for path in (ROOT / "recipes").glob("*.yaml"):
        assert path.stem in result.stdout
    assert "INVALID" not in result.stdout


def test_fields_and_rewards_read_the_one_help_text():
    from kit.recipe import field_help

    out = kit("fields", "grpo").stdout
    assert "grpo.num_generations" in out and field_help("grpo.num_generations") in out
    assert "correctness_reward" in kit("rewards").stdout


@pytest.mark.slow
def test_show_and_runs_read_a_run_folder(demo_run):
    out = kit("show", str(demo_run)).stdout
    assert "finished" in out and "correctness_reward" in out and "2-grpo" in out
    assert "not a progress signal" in out
    runs_out = kit("runs", "--dir", str(demo_run.parent)).stdout
    assert demo_run.name in runs_out and "finished" in runs_out


def test_python_dash_m_kit_and_help():
    result = kit("--help")
    assert result.returncode == 0 and "train" in result.stdout and "compare" in result.stdout
