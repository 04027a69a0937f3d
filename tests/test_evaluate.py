"""GSM8K evaluation: strict / lenient / format scoring with the shared extractor, paired comparison, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit import data
from kit.evaluate import comparison, difference_interval, score_answers

ROOT = Path(__file__).resolve().parent.parent
ROWS = data.questions("builtin:gsm8k-sample", "test", 3, shuffle=False)


def test_strict_lenient_and_format_on_real_rows():
    gold = [r["answer"] for r in ROWS]  # 18, 3, 70000 (Janet's ducks, robe fiber, house flipping)
    assert gold == ["18", "3", "70000"]
    completions = [
        data.solution_to_completion(ROWS[0]["solution"]),          # right, in the layout
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


def test_comparison_pairs_items_by_question():
    base = [{"question": q, "correct_strict": False, "correct_lenient": True, "format": False} for q in "abcd"]
    trained = [{"question": q, "correct_strict": q in "ab", "correct_lenient": True, "format": True}
               for q in "dcba"]
    table = comparison(base, trained)
    assert table["n"] == 4
    assert table["metrics"]["strict"]["diff"] == 0.5 and table["metrics"]["format"]["trained"] == 1.0
    assert table["metrics"]["lenient"]["diff"] == 0.0


def kit(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


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
    assert table["n"] == 24 and set(table["metrics"]) == {"strict", "lenient", "format"}
    assert (demo_run / "eval" / "base-test.json").is_file()
    assert "95% interval" in cmp.stdout
    # the base model here is a random tiny model: it never writes the layout
    assert table["metrics"]["format"]["base"] == 0.0

    # compare reuses a saved evaluation only for the same adapter weights: a run trained further is re-evaluated
    from kit.evaluate import adapter_id
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
