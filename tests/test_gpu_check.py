"""make gpu-check without a GPU: one line says so, the CPU half runs the same steps on a 1-layer copy, exit 0."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_cpu_half_writes_json_and_table(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the CPU half does not run")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    assert first.startswith("[gpu-check] no CUDA GPU") and "CPU half" in first
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["cuda"] is False and report["device"] == "cpu"
    steps = report["steps"]
    assert all(s["status"] == "ok" for s in steps.values()), steps
    predictions = steps["kit fit predictions (H200)"]
    for model in ("qwen2.5-0.5b", "qwen2.5-1.5b"):
        u, t = predictions[f"{model} unsloth-4bit"], predictions[f"{model} trl-peft-bf16"]
        assert 0 < u["fit_reserved_gib"] < t["fit_reserved_gib"]  # 4-bit Unsloth below 16-bit TRL + PEFT
    bench = steps["bench qwen2.5-0.5b transformers (CPU, 1-layer copy)"]
    assert bench["backend"] == "transformers" and bench["steady_step_s"] > 0 and bench["torch_max_reserved_gib"] is None
    chat = steps["eval + chat (adapter of the first bench)"]
    assert chat["eval_n"] == 4 and chat["eval_engine"] and chat["chat_stream_pieces"] >= 1
    export = steps["export merged16"]
    assert "config.json" in export["files"] and export["params"] > 0
    table = (tmp_path / "gpu-check.md").read_text()
    assert table.startswith("# gpu-check: cpu") and table.count("| ok |") == len(steps)
