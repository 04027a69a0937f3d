"""SIGKILL anywhere, resume, and nothing is lost: a shortened demo pipeline killed at a few moments spread over
the whole run (during SFT, while a GRPO checkpoint is written, during rejection sampling, while the final adapter
is written), `kit train --resume` after each, against one uninterrupted run of the same recipe. The full schedule
(12 kills) is benchmarks/kill_resume.py."""

import signal
import sys
from pathlib import Path

import pytest

from kit import runs
from kit.runs import metrics

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import kill_resume  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    return folder, kill_resume.measure(folder, kill_resume.SHORT)


def test_every_kill_lands_and_is_survived(killed):
    folder, result = killed
    # each kill point did kill the trainer (exit -9), the last resume finished
    assert result["exit_codes"] == [-signal.SIGKILL] * len(kill_resume.SHORT) + [0], result
    assert result["survived"] == result["tried"] == len(kill_resume.SHORT)
    assert result["base_exit_code"] == 0 and result["status"] == result["base_status"] == "finished"
    log = (folder / "killed.log").read_text()
    for kill in kill_resume.SHORT:
        assert f"KIT_TEST_KILL_AT={kill}: SIGKILL" in log


def test_same_answers_and_no_row_twice_or_lost(killed):
    folder, result = killed
    assert result["questions"] == kill_resume.QUESTIONS
    assert result["answers_equal"] >= 98, result
    assert result["rows_duplicated"] == 0 and result["rows_lost"] == 0, result
    # the comparison can fail: a run that kept less of its training (here: only the warm-up) answers otherwise
    final = kill_resume.answers(folder / "uninterrupted")
    warm_up = kill_resume.answers(folder / "uninterrupted" / runs.STAGES / "1-sft")
    assert sum(a != b for a, b in zip(final, warm_up)) > 100 - 98


def test_the_torn_checkpoint_was_set_aside_and_said_so(killed):
    folder, _ = killed
    run = folder / "killed"
    torn = run / runs.STAGES / "2-grpo" / "checkpoints" / runs.TORN / "checkpoint-6"
    assert (torn / "adapter_model.safetensors").is_file() and not (torn / "trainer_state.json").exists()
    assert runs.checkpoint_problem(run / runs.STAGES / "2-grpo" / "checkpoints" / "checkpoint-6") is None
    log = (folder / "killed.log").read_text()
    assert f"checkpoint-6 is torn (no trainer_state.json): skipped, kept as {torn}" in log
    # the rejection stage sampled afresh after its kill, the same answers: one rejection row, as uninterrupted
    rows = [r for r in metrics.read_jsonl(run / runs.METRICS) if "rejection/kept" in r]
    base = [r for r in metrics.read_jsonl(folder / "uninterrupted" / runs.METRICS) if "rejection/kept" in r]
    assert len(rows) == 1 and rows[0]["rejection/kept"] == base[0]["rejection/kept"] > 0
