"""The run folder's JSONL files: written one flushed line at a time, read back tolerating a half-written tail."""

import json
import math

from kit import runs
from kit.runs import metrics


def test_writer_appends_and_flushes_each_record(tmp_path):
    path = tmp_path / "m.jsonl"
    w = metrics.JsonlWriter(path, tmp_path / "copy.jsonl")
    w.write({"step": 1, "reward": 0.0, "loss": float("nan")})
    assert path.read_text().count("\n") == 1  # on disk before the writer is closed or dropped
    w.write({"step": 2, "reward": 0.5})
    rows = metrics.read_jsonl(path)
    assert rows == [{"step": 1, "reward": 0.0, "loss": None}, {"step": 2, "reward": 0.5}]
    assert metrics.read_jsonl(tmp_path / "copy.jsonl") == rows


def test_reader_skips_a_half_written_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"step": 1, "reward": 1.0}) + "\n" + '{"step": 2, "rew')
    assert metrics.read_jsonl(path) == [{"step": 1, "reward": 1.0}]
    assert metrics.read_jsonl(tmp_path / "missing.jsonl") == []


def test_zero_is_a_value_not_missing():
    recs = [{"run_step": 1, "loss": 0.0}, {"run_step": 2}, {"run_step": 3, "loss": 0.25}]
    assert metrics.series(recs, "loss") == [(1, 0.0), (3, 0.25)]


def test_window_means_and_reward_keys():
    recs = [{"run_step": i, "reward": float(i), "rewards/correctness_reward/mean": i / 10} for i in range(10)]
    assert metrics.window_mean(recs, "reward", first=True) == 1.0  # mean of 0, 1, 2
    assert metrics.window_mean(recs, "reward", first=False) == 8.0
    assert metrics.window_mean(recs, "kl", first=True) is None
    assert metrics.reward_keys(recs) == ["reward", "rewards/correctness_reward/mean"]
    assert not math.isnan(metrics.window_mean(recs, "rewards/correctness_reward/mean", first=False))


def test_summary_is_replaced_atomically_and_status_sees_dead_processes(tmp_path):
    (tmp_path / runs.RECIPE).write_text("model: {name: builtin:tiny}\n")
    runs.write_summary(tmp_path, {"status": "running", "pid": 2**22 + 12345, "host": __import__("os").uname().nodename})
    assert runs.status(tmp_path) == "failed"  # its process is gone
    runs.write_summary(tmp_path, {"status": "finished"})
    assert runs.status(tmp_path) == "finished" and not list(tmp_path.glob("*.tmp"))


def test_open_run_rejects_folders_that_are_not_runs(tmp_path):
    import pytest

    from kit.errors import KitError

    with pytest.raises(KitError, match="not a run folder"):
        runs.open_run(tmp_path)
    with pytest.raises(KitError, match="not found"):
        runs.open_run(tmp_path / "nope")
