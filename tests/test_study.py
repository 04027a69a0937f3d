"""`kit study`: a baseline and its trials as run folders, compared on the same held-out questions.

Fast: the arguments, --vary validation before anything trains, the plan (which trials share the warm-up, G scaled
with the batch), a folder made with other arguments refused, the table, the plot and the app's view.
Slow: a real two-trial study of a few steps on the demo recipe: study.json's schema and values, ONE warm-up shared
(hard-linked, trained once), the varied field in TRL's own arguments, a trial from the shared warm-up trained
exactly as the baseline (same adapter), and the same command again training and evaluating nothing, then resuming
an interrupted trial.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit import runs
from kit.app import views
from kit.errors import KitError
from kit.recipe import load_recipe
from kit.runs import metrics
from kit.tools import study

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "recipes" / "demo.yaml"


def kit(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


# ---------------------------------------------------------------------------------------------------------------
# Fast: arguments and the plan


def test_values_split_on_commas_outside_brackets():
    assert study.split_values("0,1e-4, 1e-3") == ["0", "1e-4", "1e-3"]
    assert study.split_values("[q_proj,v_proj],[q_proj]") == ["[q_proj,v_proj]", "[q_proj]"]


@pytest.mark.parametrize("vary, needle", [
    (["grpo.beta"], "section.field=v1,v2"),
    (["grpo.beta="], "section.field=v1,v2"),
    (["beta=0,1"], "section.field"),
    (["eval.limit=10,20"], "eval.* says how runs are measured"),
    (["run.output_dir=a,b"], "run.*"),
    (["grpo.seed=1,2"], "--seeds N"),
    (["grpo.beta=0,1e-3", "grpo.beta=1e-4"], "given twice"),
    (["grpo.beta=0,0"], "listed twice"),
    ([], "at least one --vary"),
])
def test_vary_is_checked_before_anything(vary, needle):
    with pytest.raises(KitError, match=None) as e:
        study.parse_vary(vary)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_every_trial_recipe_is_validated_first(tmp_path):
    for vary, needle in ((["grpo.betta=0.1"], "did you mean `beta`"), (["grpo.beta=0.1,2"], "grpo.beta"),
                         (["grpo.loss_type=dapo,nope"], "grpo.loss_type")):
        with pytest.raises(KitError) as e:
            study.plan_study(DEMO, vary, out=tmp_path / "s")
        assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()


def test_what_kit_train_checks_before_the_model_is_checked_for_every_trial_first(tmp_path):
    with pytest.raises(KitError) as e:  # the plan on this machine: Unsloth needs a CUDA GPU
        study.run_study(DEMO, ["grpo.beta=1e-3", "model.backend=unsloth"], out=tmp_path / "s")
    assert str(e.value).startswith("--vary model.backend=unsloth: model.backend") and "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()


def test_command_line_errors_are_one_line_and_train_nothing(tmp_path):
    result = kit("study", str(DEMO), "--vary", "grpo.beta=0.001", "grpo.epsilonn=0.1", "--set", "grpo.max_steps=2",
                 cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "grpo.epsilonn" in lines[0] and "epsilon" in lines[0], result.stderr
    assert not (tmp_path / "studies").exists()
    result = kit("study", str(DEMO), cwd=tmp_path)
    assert result.returncode == 2 and "--vary" in result.stderr


def test_parser_takes_several_values_after_vary_and_set():
    from kit.cli import build_parser

    args = build_parser().parse_args(["study", str(DEMO), "--vary", "grpo.beta=0,1e-3", "grpo.epsilon=0.1",
                                      "--set", "grpo.max_steps=2", "sft.max_steps=5", "--set", "eval.limit=8",
                                      "--seeds", "2", "--samples", "4", "--grid"])
    assert args.vary == ["grpo.beta=0,1e-3", "grpo.epsilon=0.1"]
    assert args.overrides == ["grpo.max_steps=2", "sft.max_steps=5", "eval.limit=8"]
    assert (args.seeds, args.samples, args.limit, args.out, args.grid) == (2, 4, None, None, True)


def test_plan_one_field_at_a_time_with_seeds():
    out, trials, notes = study.plan_study(
        DEMO, ["grpo.beta=0,1e-3", "grpo.num_generations=4,8", "sft.max_steps=10", "grpo.optim=adamw_torch"],
        ["sft.max_steps=20"], seeds=2)
    assert out == Path("studies/demo")
    names = [(t.name, t.seed) for t in trials]
    # per seed: the baseline, then each value that is not the baseline's own (beta 0 and G 8 are the demo's)
    expected = ["baseline", "grpo.beta=1e-3", "grpo.num_generations=4", "sft.max_steps=10", "grpo.optim=adamw_torch"]
    assert names == [(n, 3407) for n in expected] + [(n, 3408) for n in expected]
    assert len(notes) == 2 and all("baseline's own value" in n for n in notes)
    by = {(t.name, t.seed): t for t in trials}
    assert by["grpo.beta=1e-3", 3408].changes == {"grpo.beta": 0.001}
    assert by["grpo.beta=1e-3", 3408].recipe.grpo.seed == 3408 and by["baseline", 3408].recipe.grpo.seed == 3408
    # G 8 -> 4 keeps the demo's 8 questions per step: the batch follows, and the changes say so
    g4 = by["grpo.num_generations=4", 3407]
    assert g4.changes == {"grpo.num_generations": 4, "grpo.per_device_train_batch_size": 32}
    # GRPO-only trials start from the baseline's warm-up; one the warm-up reads (sft.*, grpo.optim) trains its own
    assert by["grpo.beta=1e-3", 3407].shares_warmup and g4.shares_warmup
    assert not by["sft.max_steps=10", 3407].shares_warmup and not by["grpo.optim=adamw_torch", 3407].shares_warmup
    assert not by["baseline", 3407].shares_warmup
    assert by["grpo.beta=1e-3", 3408].folder == Path("studies/demo/grpo.beta=1e-3-seed3408")


def test_grid_and_a_recipe_without_warm_up():
    _, trials, _ = study.plan_study(DEMO, ["grpo.beta=1e-3,1e-4", "grpo.epsilon=0.1,0.3"],
                                    ["sft.enabled=false"], grid=True)
    assert [t.name for t in trials] == ["baseline",
                                        "grpo.beta=1e-3+grpo.epsilon=0.1", "grpo.beta=1e-3+grpo.epsilon=0.3",
                                        "grpo.beta=1e-4+grpo.epsilon=0.1", "grpo.beta=1e-4+grpo.epsilon=0.3"]
    assert not any(t.shares_warmup for t in trials)  # no SFT stage: nothing to share
    with pytest.raises(KitError, match="nothing to compare"):
        study.plan_study(DEMO, ["grpo.beta=0"])


def test_g_that_cannot_keep_the_questions_per_step_is_refused():
    with pytest.raises(KitError, match="questions per step"):
        # 1 question per step (2 x 4 / 8): G=3 makes 3 completions, neither N x 4 nor 2 x N
        study.plan_study(DEMO, ["grpo.num_generations=3"], ["grpo.gradient_accumulation_steps=4",
                                                             "grpo.per_device_train_batch_size=2"])


def test_a_folder_made_with_other_arguments_is_refused(tmp_path):
    out = tmp_path / "s"
    args = study.study_args(DEMO, ["grpo.beta=1e-3"], [], 1, None, None, False)
    _, trials, _ = study.plan_study(DEMO, ["grpo.beta=1e-3"], out=out)
    assert study.check_folder(out, args, trials) is None  # new
    study.write_study(out, {"recipe": str(DEMO), "args": args, "trials": [study._entry(t, out) for t in trials]},
                      plot=False)
    assert study.check_folder(out, args, trials)["args"] == args  # the same arguments continue it
    other = dict(args, seeds=2)
    with pytest.raises(KitError, match=r"made with --seeds 1, not --seeds 2.*another --out"):
        study.check_folder(out, other, trials)
    with pytest.raises(KitError, match=r"--vary grpo.beta=1e-3, not --vary grpo.beta=1e-4"):
        study.check_folder(out, dict(args, vary=["grpo.beta=1e-4"]), trials)
    # a run folder trained from another recipe (the recipe file changed since)
    folder = trials[0].folder
    folder.mkdir(parents=True)
    load_recipe(DEMO)  # the recipe itself is fine
    from kit.recipe import save_recipe

    save_recipe(load_recipe(DEMO, ["grpo.learning_rate=1e-4", "grpo.seed=3407"]), folder / runs.RECIPE)
    with pytest.raises(KitError, match=r"trained with grpo.learning_rate=0.0001.*recipe file change"):
        study.check_folder(out, args, trials)
    stray = tmp_path / "stray"
    (stray / "x").mkdir(parents=True)
    with pytest.raises(KitError, match="not a study folder"):
        study.check_folder(stray, args, trials)


def _fake_study(k=None):
    def d(x, lo, hi):
        return {"diff": x, "low": lo, "high": hi}

    trials = []
    for seed, base, diff in ((3407, 0.80, 0.05), (3408, 0.84, 0.01)):
        trials.append({"name": "baseline", "changes": {}, "seed": seed, "run": f"baseline-seed{seed}",
                       "status": "finished", "metrics": {"strict": base, "lenient": base, "format": 1.0},
                       "vs_baseline": {}, "train_s": 60.0, "kl": None, "warmup": "own"})
        trials.append({"name": "grpo.beta=1e-3", "changes": {"grpo.beta": 0.001}, "seed": seed,
                       "run": f"grpo.beta=1e-3-seed{seed}", "status": "finished",
                       "metrics": {"strict": base + diff, "lenient": base + diff, "format": 1.0},
                       "vs_baseline": {"strict": d(diff, diff - 0.03, diff + 0.03), "lenient": d(diff, -0.01, 0.1),
                                       "format": d(0.0, 0.0, 0.0)},
                       "train_s": 61.0, "kl": 0.00012, "warmup": f"baseline-seed{seed}"})
    return {"recipe": "recipes/demo.yaml", "args": study.study_args("recipes/demo.yaml", ["grpo.beta=1e-3"], [], 2,
                                                                     200, k, False),
            "eval": {"split": "test", "n": 200, "source": "builtin:arithmetic", "samples": 0, "max_new_tokens": 32},
            "trials": trials}


def test_table_shows_each_trial_and_the_seed_spread():
    text = study.study_markdown(_fake_study())
    assert "`kit study recipes/demo.yaml --vary grpo.beta=1e-3 --seeds 2 --limit 200`" in text
    assert "| grpo.beta=1e-3 * | 3407 | finished | 85.0% | 85.0% | 100.0% | +5.0 [+2.0, +8.0] |" in text
    assert "| baseline | 3408 | finished | 84.0% |" in text
    assert "## Across seeds" in text
    assert "| baseline | 2/2 | 80.0..84.0% (std 2.8) |" in text
    assert "| grpo.beta=1e-3 | 2/2 | 85.0..85.0% (std 0.0) | +3.0 | +5.0, +1.0 | 1 / 0 |" in text
    assert "moves strict accuracy by 4.0 points" in text


def test_plot_and_the_apps_study_view(tmp_path):
    s = _fake_study()
    folder = tmp_path / "studies" / "demo"
    study.write_study(folder, s)
    assert (folder / study.STUDY_PNG).stat().st_size > 5_000
    assert json.loads((folder / study.STUDY_JSON).read_text())["trials"] == s["trials"]
    assert views.study_folders(tmp_path / "studies") == [folder]
    assert views.study_folders(tmp_path / "nothing") == []
    text, png = views.study_view(folder)
    assert "## Across seeds" in text and png == folder / study.STUDY_PNG
    text, png = views.study_view(None)
    assert "kit study" in text and png is None


def test_the_app_builds_with_its_studies_panel(tmp_path):
    from kit.app import ui

    app = ui.build_app(ROOT / "recipes", tmp_path / "runs", studies_dir=tmp_path / "studies")
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert {"studies", "study-pick", "study-table", "study-plot"} <= ids


# ---------------------------------------------------------------------------------------------------------------
# Slow: a real study of a few steps

# a warm-up of a few small steps, 2 GRPO steps of 2 questions x 4 answers, short answers, no evaluation during
# training; 16 held-out questions
SETS = ["sft.max_steps=6", "sft.per_device_train_batch_size=4", "sft.limit=32", "sft.learning_rate=3e-3",
        "grpo.max_steps=2", "grpo.save_steps=2", "grpo.num_generations=4", "grpo.per_device_train_batch_size=8",
        "grpo.max_completion_length=16", "eval.max_new_tokens=16", "eval.every_steps=0"]
# beta: KL is logged and must reach TRL; completions_every only changes what is logged: that trial, trained from the
# shared warm-up, must end exactly where the baseline (trained in one go) did
VARY = ["grpo.beta=0.001", "grpo.completions_every=3"]
KEYS = ("strict", "lenient", "format", "pass@1", "pass@2", "maj@2")  # --samples 2


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith("study.")}


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "demo"
    t0 = time.time()
    study.run_study(DEMO, VARY, SETS, limit=16, samples=2, out=out)
    return out, time.time() - t0


@pytest.mark.slow
def test_study_json_schema_and_values(demo_study):
    out, seconds = demo_study
    s = json.loads((out / "study.json").read_text())
    assert s["recipe"] == str(DEMO) and s["args"]["vary"] == VARY and s["args"]["set"] == SETS
    assert s["eval"]["n"] == 16 and s["eval"]["split"] == "test" and s["eval"]["samples"] == 2
    trials = s["trials"]
    assert [t["name"] for t in trials] == ["baseline", "grpo.beta=0.001", "grpo.completions_every=3"]
    for t in trials:
        assert {"name", "changes", "seed", "run", "metrics", "vs_baseline", "train_s", "kl"} <= set(t)
        assert t["status"] == "finished" and t["seed"] == 3407
        assert (out / t["run"] / runs.RECIPE).is_file() and runs.status(out / t["run"]) == "finished"
        assert set(t["metrics"]) == set(KEYS)
        assert all(0.0 <= v <= 1.0 for v in t["metrics"].values())
        assert t["train_s"] > 0
    base, beta, logged = trials
    assert base["changes"] == {} and base["vs_baseline"] == {} and base["kl"] is None
    assert beta["changes"] == {"grpo.beta": 0.001} and logged["changes"] == {"grpo.completions_every": 3}
    for t in (beta, logged):
        assert set(t["vs_baseline"]) == set(KEYS)
        for key, d in t["vs_baseline"].items():
            assert d["low"] <= d["diff"] <= d["high"]
            assert d["diff"] == pytest.approx(t["metrics"][key] - base["metrics"][key])
    # KL is the last one the beta trial logged; a trial without beta has none
    kls = [r["kl"] for r in metrics.read_jsonl(out / beta["run"] / runs.METRICS) if "kl" in r]
    assert kls and beta["kl"] == kls[-1] and logged["kl"] is None
    md = (out / "study.md").read_text()
    assert "| grpo.beta=0.001 * | 3407 | finished |" in md and "Δ strict [95%]" in md and "Δ pass@2 [95%]" in md
    assert (out / "study.png").stat().st_size > 5_000
    print(f"\nthe study took {seconds:.0f} s")


@pytest.mark.slow
def test_trials_share_one_warm_up_trained_once(demo_study):
    out, _ = demo_study
    base = out / "baseline-seed3407"
    weights = base / "stages/1-sft/adapter/adapter_model.safetensors"
    assert (base / "stages/1-sft/checkpoints").is_dir()  # the baseline trained it
    for name in ("grpo.beta=0.001-seed3407", "grpo.completions_every=3-seed3407"):
        stage = out / name / "stages/1-sft"
        assert os.path.samefile(stage / "adapter/adapter_model.safetensors", weights)
        assert not (stage / "checkpoints").exists()  # nothing trained here
        reused = json.loads((stage / study.REUSED).read_text())
        assert (stage / reused["from"]).resolve() == (base / "stages/1-sft").resolve() and reused["seconds"] > 0
        summary = runs.read_summary(out / name)
        assert [(s["name"], s["status"]) for s in summary["stages"]] == [("1-sft", "finished"), ("2-grpo", "finished")]
        # its curves hold the warm-up's records as the baseline logged them, then its own GRPO steps
        records = metrics.read_jsonl(out / name / runs.METRICS)
        assert [r for r in records if r["stage"] == "1-sft"] == [
            r for r in metrics.read_jsonl(base / runs.METRICS) if r["stage"] == "1-sft"]
        assert [r["step"] for r in records if r["stage"] == "2-grpo" and "reward" in r] == [1, 2]
    # a warm-up the whole study trained once: only the baseline's log shows its supervised steps being trained
    sft_logs = [p for p in out.glob("*/stages/1-sft/checkpoints")]
    assert sft_logs == [base / "stages/1-sft/checkpoints"]


@pytest.mark.slow
def test_the_varied_field_reaches_trl(demo_study):
    import torch

    out, _ = demo_study

    def trl_args(name):
        return torch.load(out / name / "stages/2-grpo/checkpoints/checkpoint-2/training_args.bin", weights_only=False)

    assert trl_args("grpo.beta=0.001-seed3407").beta == pytest.approx(0.001)
    assert trl_args("baseline-seed3407").beta == 0.0
    assert load_recipe(out / "grpo.beta=0.001-seed3407" / runs.RECIPE).grpo.beta == pytest.approx(0.001)


@pytest.mark.slow
def test_a_trial_from_the_shared_warm_up_trains_as_the_baseline_did(demo_study):
    """completions_every changes only what is logged: from the copied warm-up, resumed through kit.train.flow, the
    trial must end with the adapter the baseline reached training SFT and GRPO in one go."""
    from safetensors.torch import load_file

    out, _ = demo_study
    a = load_file(str(out / "baseline-seed3407/adapter/adapter_model.safetensors"))
    b = load_file(str(out / "grpo.completions_every=3-seed3407/adapter/adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


@pytest.mark.slow
def test_the_same_command_again_redoes_nothing_then_resumes_an_interrupted_trial(demo_study, capsys):
    out, first = demo_study
    before = _files(out)
    capsys.readouterr()
    t0 = time.time()
    study.run_study(DEMO, VARY, SETS, limit=16, samples=2, out=out)
    again = time.time() - t0
    said = capsys.readouterr().out
    assert said.count(": reused") == 3 and "training" not in said and "evaluated" not in said, said
    assert _files(out) == before, "no run folder file was written again (training and evaluation cached)"
    assert again < 10 and again < first / 5, (again, first)

    # interrupted: the beta trial killed in its GRPO stage after its last checkpoint, before the final adapter
    run = out / "grpo.beta=0.001-seed3407"
    summary = runs.read_summary(run)
    summary["status"], summary["stages"][1]["status"], summary["pid"] = "running", "running", 2**22 + 1
    runs.write_summary(run, summary)
    import shutil

    shutil.rmtree(run / runs.ADAPTER)
    study.run_study(DEMO, VARY, SETS, limit=16, samples=2, out=out)
    said = capsys.readouterr().out
    assert "trial 2/3 grpo.beta=0.001 seed 0: resuming" in said and said.count(": reused") == 2, said
    assert "trial 2/3 grpo.beta=0.001 seed 0: evaluated" in said  # its adapter is new: evaluated again
    assert runs.status(run) == "finished" and (run / runs.ADAPTER / "adapter_model.safetensors").is_file()
    assert not (run / "stages/1-sft/checkpoints").exists()  # the warm-up was not trained again
    after = _files(out)
    untouched = [k for k in before if not k.startswith("grpo.beta=0.001-seed3407")]
    assert {k: after[k] for k in untouched} == {k: before[k] for k in untouched}
