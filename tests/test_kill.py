"""SIGKILL anywhere, resume, and nothing is lost: a shortened demo pipeline killed at a few moments spread over
the whole run (during SFT, while a GRPO checkpoint is written, during rejection sampling, while the final adapter
is written), `kit train --resume` after each, against one uninterrupted run of the same recipe. The full schedule
(12 kills) is benchmarks/kill_resume.py."""

import signal
import sys
import threading
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


# With beta > 0, TRL keeps a frozen copy of the stage's starting adapter as the KL reference ("ref") and checkpoints
# hold it in a subfolder; transformers then resumed only that one, and the trained adapter silently restarted from
# the warm-up. Two GRPO stages: the second builds its own reference (the first's is gone, not "already exists").
KL_PIPELINE = ["stages=[{kind: sft, max_steps: 20}, {kind: grpo, max_steps: 6}, {kind: grpo, max_steps: 2}]",
               "sft.learning_rate=3e-3", "grpo.per_device_train_batch_size=32", "grpo.save_steps=3",
               "grpo.learning_rate=3e-4", "grpo.beta=1e-3", "eval.every_steps=0"]


def test_a_killed_run_with_a_kl_reference_resumes_its_trained_adapter(tmp_path):
    from safetensors.torch import load_file

    base, run = tmp_path / "uninterrupted", tmp_path / "killed"
    codes = {}
    side = threading.Thread(target=lambda: codes.update(base=kill_resume.train(base, KL_PIPELINE)))
    side.start()  # one thread each (kill_resume._env): the two runs share the 2 cores and compute alike
    assert kill_resume.train(run, KL_PIPELINE, kill="step:2-grpo/5") == -signal.SIGKILL
    side.join()
    assert codes["base"] == 0, (tmp_path / "uninterrupted.log").read_text()[-3000:]
    ckpt = run / runs.STAGES / "2-grpo" / "checkpoints" / "checkpoint-3"
    assert (ckpt / "ref" / "adapter_model.safetensors").is_file()  # the case: the reference in a subfolder
    assert kill_resume.train(run, KL_PIPELINE, resume=True) == 0, (tmp_path / "killed.log").read_text()[-3000:]

    for folder in (runs.STAGES + "/2-grpo/" + runs.ADAPTER, runs.ADAPTER):
        a = load_file(str(base / folder / "adapter_model.safetensors"))
        b = load_file(str(run / folder / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst < 1e-5, f"{folder}: the resumed run's weights differ from the uninterrupted run's by {worst}"
        assert not (run / folder / "ref").exists()  # the reference is a stage's own, not part of what it trained
    warm_up = load_file(str(base / runs.STAGES / "1-sft" / runs.ADAPTER / "adapter_model.safetensors"))
    trained = load_file(str(base / runs.STAGES / "2-grpo" / runs.ADAPTER / "adapter_model.safetensors"))
    assert max((warm_up[k] - trained[k]).abs().max().item() for k in warm_up) > 1e-3  # GRPO moved the weights
