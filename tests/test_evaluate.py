"""GSM8K evaluation: strict / lenient / format scoring with the shared extractor, paired comparison, the CLI."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import kit

from kit.errors import KitError
from kit.eval.evaluate import Side, _saved, write_results
from kit.eval.scoring import (
    comparison,
    difference_interval,
    format_comparison,
    gain_split,
    majority,
    pass_at_k,
    score_answers,
    score_samples,
)
from kit.task import answers, data

ROOT = Path(__file__).resolve().parent.parent
ROWS = data.questions("builtin:gsm8k-sample", "test", 3, shuffle=False)


def test_strict_lenient_and_format_on_real_rows():
    gold = [r["answer"] for r in ROWS]  # 18, 3, 70000 (Janet's ducks, robe fiber, house flipping)
    assert gold == ["18", "3", "70000"]
    completions = [
        answers.solution_to_completion(ROWS[0]["solution"]),          # right, in the layout
        "2 bolts of blue plus 1 of white makes 3",                  # right, no layout: lenient only
        "<reasoning>\nflip\n</reasoning>\n<answer>\n$70,000\n</answer>\nso maybe 5",  # right answer, bad layout
    ]
    summary, items = score_answers(ROWS, completions)
    assert [i["correct_strict"] for i in items] == [True, False, True]
    assert [i["correct_lenient"] for i in items] == [True, True, True]
    assert [i["format"] for i in items] == [True, False, False]
    assert summary["accuracy_strict"] == pytest.approx(2 / 3) and summary["format_rate"] == pytest.approx(1 / 3)
    assert summary["n"] == 3 and summary["length_unit"] == "characters"


def test_wrong_and_empty_answers_score_zero():
    summary, items = score_answers(ROWS[:2], ["<answer>17</answer>", ""])
    assert summary["accuracy_strict"] == 0 and summary["accuracy_lenient"] == 0
    assert items[1]["pred_lenient"] is None


def test_difference_interval_is_paired():
    base = [False] * 50 + [True] * 50
    trained = [True] * 100
    diff, low, high = difference_interval(base, trained)
    assert diff == 0.5 and low < 0.5 < high and low > 0.35
    same = difference_interval([True, False] * 10, [True, False] * 10)
    assert same == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        difference_interval([True], [])


def _item(q, strict, lenient, fmt=False, **extra):
    return {"question": q, "correct_strict": strict, "correct_lenient": lenient, "format": fmt, **extra}


def _summary(items):
    return {"n": len(items), **{key: sum(i[f] for i in items) / len(items) for key, f in (
        ("accuracy_strict", "correct_strict"), ("accuracy_lenient", "correct_lenient"), ("format_rate", "format"))}}


def test_comparison_pairs_items_by_question_and_has_the_documented_schema():
    base = [_item(q, False, True) for q in "abcd"]
    trained = [_item(q, q in "ab", True, True) for q in "dcba"]
    table = comparison((_summary(base), base), (_summary(trained), trained))
    assert set(table) >= {"n", "a", "b", "diff", "gain"} and table["n"] == 4
    assert set(table["diff"]) == {"accuracy_strict", "accuracy_lenient", "format_rate"}
    assert all(set(d) == {"value", "low", "high"} for d in table["diff"].values())
    assert table["diff"]["accuracy_strict"]["value"] == 0.5 and table["diff"]["format_rate"]["value"] == 1.0
    assert table["diff"]["accuracy_lenient"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert table["a"]["accuracy_strict"] == 0.0 and table["b"]["format_rate"] == 1.0
    assert table["gain"]["format_gain"]["count"] == 2 and table["gain"]["reasoning_gain"]["count"] == 0


def test_gain_split_on_a_hand_made_pair():
    # (A strict, A lenient) -> (B strict, B lenient), one question per movement
    a = [_item("fmt+", False, True), _item("rsn+", False, False), _item("rsn+2", False, False),
         _item("fmt-", True, True), _item("rsn-", True, True), _item("same", True, True),
         _item("len+", False, False), _item("never", False, False)]
    b = [_item("fmt+", True, True), _item("rsn+", True, True), _item("rsn+2", True, True),
         _item("fmt-", False, True), _item("rsn-", False, False), _item("same", True, True),
         _item("len+", False, True), _item("never", False, False)]
    g = gain_split(a, b)
    assert {k: g[k]["count"] for k in ("format_gain", "reasoning_gain", "format_loss", "reasoning_loss")} == {
        "format_gain": 1, "reasoning_gain": 2, "format_loss": 1, "reasoning_loss": 1}
    assert g["n"] == 8 and g["reasoning_gain"]["share"] == 0.25
    # the split adds up to the strict difference
    strict = sum(i["correct_strict"] for i in b) - sum(i["correct_strict"] for i in a)
    assert strict == 1 + 2 - 1 - 1
    text = format_comparison(comparison((_summary(a), a), (_summary(b), b)))
    assert "reasoning gain" in text and "net +1 of 8" in text


def test_pass_at_k_matches_hand_computed_values():
    assert pass_at_k(8, 0, 1) == 0.0 and pass_at_k(8, 0, 8) == 0.0  # c = 0
    assert pass_at_k(8, 8, 1) == 1.0 and pass_at_k(8, 8, 8) == 1.0  # c = n
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)  # pass@1 = c / n
    assert pass_at_k(8, 3, 2) == pytest.approx(1 - math.comb(5, 2) / math.comb(8, 2))  # 1 - 10/28
    assert pass_at_k(8, 3, 2) == pytest.approx(18 / 28)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # C(3,3)/C(5,3) = 1/10
    assert pass_at_k(8, 1, 8) == 1.0 and pass_at_k(8, 4, 5) == 1.0  # n - c < k: some right sample is drawn
    # not "any of k": with 1 right of 8, two samples find it 2 times in 8, not always
    assert pass_at_k(8, 1, 2) == pytest.approx(0.25)
    assert pass_at_k(200, 17, 10) == pytest.approx(1 - math.comb(183, 10) / math.comb(200, 10))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote_and_its_ties():
    assert majority(["3", "4", "4"]) == "4"
    assert majority(["4", "3", "3", "4"]) == "4"  # tie: the tied answer sampled first
    assert majority(["3", "4", "3", "4"]) == "3"
    assert majority([None, None, "5"]) == "5"  # no answer: no vote
    assert majority([None, "2", None, None, "1", "1"]) == "1"  # None is never the majority
    assert majority([None, None]) is None and majority([]) is None


def test_score_samples_reports_pass_and_maj_strict_and_lenient():
    rows = [{"question": "q1", "answer": "5"}, {"question": "q2", "answer": "7"}]
    right, plain, wrong = "<reasoning>\n2+3\n</reasoning>\n<answer>\n5\n</answer>", "so 5", "<answer>6</answer>"
    samples = [[right, plain, wrong, right], ["<answer>7</answer>", "it is 8", "it is 8", "no idea"]]
    summary, per_row = score_samples(rows, samples)
    assert summary["samples"] == 4
    assert summary["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert summary["pass@1_lenient"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert summary["pass@4"] == 1.0 and summary["pass@2"] == pytest.approx(
        (pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2)
    # q1: strict votes 5, 6, 5 (the prose answer has no <answer> block: no strict vote) -> 5, right;
    # q2: lenient votes 7, 8, 8 -> 8, wrong; strict votes only 7 -> right
    assert per_row[0]["sampled"]["maj"] == "5" and per_row[1]["sampled"]["maj_lenient"] == "8"
    assert summary["maj@4"] == 1.0 and summary["maj@4_lenient"] == 0.5
    assert per_row[0]["samples"][1] == {"completion": plain, "pred_strict": None, "pred_lenient": "5",
                                        "correct_strict": False, "correct_lenient": True, "format": False}
    with pytest.raises(ValueError):
        score_samples(rows, [[right], [right, right]])


def _fake_run(root: Path) -> Path:
    """A run folder with a finished SFT stage and a final adapter (files only: nothing here loads a model)."""
    recipe = (ROOT / "recipes" / "demo.yaml").read_text()
    run = root / "demo-20260101-000000"
    for folder in (run, run / "stages" / "1-sft", run / "stages" / "2-grpo"):
        (folder / "adapter").mkdir(parents=True)
        (folder / "recipe.yaml").write_text(recipe)
        (folder / "adapter" / "adapter_config.json").write_text("{}")
        (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    (run / "summary.json").write_text("{}")
    return run


def test_stage_folders_runs_and_recipes_are_each_a_side(tmp_path):
    run = _fake_run(tmp_path)
    stage = Side(str(run / "stages" / "1-sft"))
    assert stage.adapter == run / "stages" / "1-sft" / "adapter" and stage.kind == "trained"
    assert stage.folder == run / "stages" / "1-sft" / "eval" and stage.label == f"{run.name}/1-sft"
    final = Side(str(run))
    assert final.adapter == run / "adapter" and final.folder == run / "eval"
    recipe = Side(str(ROOT / "recipes" / "demo.yaml"))
    assert recipe.adapter is None and recipe.kind == "base" and recipe.id is None
    base = Side(str(run), base=True)
    assert base.adapter is None and base.folder == run / "eval"
    assert stage.id != final.id  # results are kept per adapter
    (run / "stages" / "2-grpo" / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(KitError, match="has no adapter yet"):
        Side(str(run / "stages" / "2-grpo"))


def test_saved_results_are_reused_only_for_the_same_weights_items_and_settings(tmp_path):
    run = _fake_run(tmp_path)
    side = Side(str(run))
    rows = [{"question": "q1", "answer": "5"}]
    settings = {"samples": 0, "temperature": None, "max_new_tokens": 48, "system_prompt": "p"}
    write_results(side.folder, "trained-test", {"adapter": side.id, "settings": settings},
                  [{"question": "q1"}])
    assert _saved(side.folder, "trained-test", rows, side.id, settings) is not None
    assert _saved(side.folder, "trained-test", rows, side.id, dict(settings, samples=4)) is None
    assert _saved(side.folder, "trained-test", [{"question": "q2"}], side.id, settings) is None
    weights = side.adapter / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert _saved(side.folder, "trained-test", rows, Side(str(run)).id, settings) is None


def test_json_mode_keeps_stdout_for_the_result(capfd):
    """`--json`: what libraries and child processes print meanwhile (vLLM logs to stdout) lands on stderr."""
    from kit.cli import _stdout_to_stderr

    with _stdout_to_stderr() as result:
        print("a library's log line")
        subprocess.run([sys.executable, "-c", "print('a child process log line')"], check=True)
        print('{"n": 1}', file=result)
    print("after")
    out, err = capfd.readouterr()
    assert out == '{"n": 1}\nafter\n'
    assert "a library's log line" in err and "a child process log line" in err


@pytest.mark.slow
def test_eval_and_compare_cli_write_results(demo_run):
    out = kit("eval", str(demo_run), "--limit", "24")
    assert out.returncode == 0, out.stderr
    summary = json.loads((demo_run / "eval" / "trained-test.json").read_text())
    items = (demo_run / "eval" / "trained-test.jsonl").read_text().splitlines()
    assert summary["n"] == 24 and len(items) == 24 and summary["split"] == "test"
    assert "strict" in out.stdout and "lenient" in out.stdout

    cmp = kit("compare", str(demo_run), "--limit", "24")
    assert cmp.returncode == 0, cmp.stderr
    table = json.loads((demo_run / "eval" / "compare-test.json").read_text())
    assert table["n"] == 24 and set(table["diff"]) == {"accuracy_strict", "accuracy_lenient", "format_rate"}
    assert (demo_run / "eval" / "base-test.json").is_file()
    assert "95% interval" in cmp.stdout and "reasoning gain" in cmp.stdout
    # the base model here is a random tiny model: it never writes the layout
    assert table["a"]["format_rate"] == 0.0

    # compare reuses a saved evaluation only for the same adapter weights: a run trained further is re-evaluated
    from kit.eval.evaluate import adapter_id
    from kit.runs import latest_adapter

    saved = json.loads((demo_run / "eval" / "trained-test.json").read_text())
    assert saved["adapter"] == adapter_id(latest_adapter(demo_run))
    weights = latest_adapter(demo_run) / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    again = kit("compare", str(demo_run), "--limit", "24")
    assert again.returncode == 0 and "eval trained" in again.stderr  # its progress bar: evaluated afresh
    assert "eval base" not in again.stderr  # the base model did not change
    assert json.loads((demo_run / "eval" / "trained-test.json").read_text())["adapter"] == adapter_id(
        latest_adapter(demo_run))


@pytest.mark.slow
def test_sampled_eval_of_a_stage_and_compare_of_two_checkpoints(demo_run, tmp_path):
    stage = demo_run / "stages" / "1-sft"
    recipe = tmp_path / "demo.yaml"  # the base-model side keeps its results under run.output_dir
    recipe.write_text((ROOT / "recipes" / "demo.yaml").read_text() + f"\nrun:\n  output_dir: {tmp_path}\n")
    out = kit("eval", str(stage), "--limit", "8", "--samples", "4", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # stdout holds only the JSON object
    for key in ("n", "samples", "accuracy_strict", "accuracy_lenient", "format_rate", "pass@1", "pass@4", "maj@4",
                "pass@1_lenient", "pass@4_lenient", "maj@4_lenient"):
        assert key in summary, key
    assert summary["samples"] == 4 and summary["n"] == 8
    assert 0 <= summary["pass@1"] <= summary["pass@2"] <= summary["pass@4"] <= 1
    items = [json.loads(line) for line in (stage / "eval" / "trained-test-k4.jsonl").read_text().splitlines()]
    assert len(items) == 8 and all(len(i["samples"]) == 4 for i in items)
    assert {"completion", "pred_strict", "correct_strict", "correct_lenient"} <= set(items[0]["samples"][0])
    again = kit("eval", str(stage), "--limit", "8", "--samples", "4", "--json")
    assert json.loads(again.stdout)["pass@1"] == summary["pass@1"]  # seeded sampling: same figures twice

    # the SFT stage vs the final adapter, one model in memory: the final side's answers must be those of the final
    # adapter loaded on its own (kit eval above loaded it alone; drop that result so compare generates afresh)
    alone = [json.loads(line)["completion"] for line in
             (demo_run / "eval" / "trained-test.jsonl").read_text().splitlines()][:8]
    for f in (demo_run / "eval").glob("trained-test.*"):
        f.unlink()
    for f in (stage / "eval").glob("trained-test.*"):
        f.unlink()
    cmp = kit("compare", str(stage), str(demo_run), "--limit", "8", "--json")
    assert cmp.returncode == 0, cmp.stderr
    table = json.loads(cmp.stdout)
    assert set(table) >= {"n", "a", "b", "diff", "gain"} and table["n"] == 8
    assert table["a"]["adapter"].startswith(str((stage / "adapter").resolve()))
    switched = [json.loads(line)["completion"] for line in
                (demo_run / "eval" / "trained-test.jsonl").read_text().splitlines()]
    assert switched == alone
    assert (demo_run / "eval" / f"compare-{demo_run.name}-1-sft-test.json").is_file()
    # a recipe (its base model) on either side
    cmp = kit("compare", str(recipe), str(stage), "--limit", "8", "--json")
    assert cmp.returncode == 0, cmp.stderr
    assert json.loads(cmp.stdout)["a"]["adapter"] is None
    cmp = kit("compare", str(stage), str(recipe), "--limit", "8")
    assert cmp.returncode == 0 and "reasoning gain" in cmp.stdout, cmp.stderr


def test_held_out_panel_shows_pass_at_k_when_logged():
    from kit.runs import plots

    panel = next(p for p in plots.PANELS if p.title == "Held-out accuracy")
    records = [{"step": s, "run_step": 10 + s, "stage": "2-grpo", "eval/accuracy_strict": 0.5,
                "eval/accuracy_lenient": 0.6, "eval/pass@8": 0.9, "eval/pass@1": 0.4} for s in (0, 50)]
    records.append({"step": 3, "run_step": 3, "stage": "1-sft", "loss": 1.0})
    series = plots.panel_series(records, panel)
    assert list(series) == ["eval/accuracy_strict", "eval/accuracy_lenient", "eval/pass@1", "eval/pass@8"]
    assert series["eval/pass@8"] == [(10, 0.9), (60, 0.9)]
    assert plots.figure(records) is not None
