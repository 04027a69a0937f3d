"""Multi-process training, as far as a CPU allows: two processes (torchrun, gloo) run the kit's flow data-parallel;
only the main one writes the run folder. TRL's vLLM server mode is selected by
model.vllm_server."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port

from kit import runs
from kit.runs import metrics

ROOT = Path(__file__).resolve().parent.parent


def launch(tmp_path, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    # torchrun: accelerate's --cpu launcher starts a single process; the Trainer inside picks up torchrun's
    # RANK/WORLD_SIZE and trains data-parallel over gloo, as it would over NCCL under `accelerate launch`.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "kit", "train", str(ROOT / "recipes" / "demo.yaml"), *extra]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_write_one_run_folder(tmp_path):
    run = tmp_path / "run"
    out = launch(tmp_path, "--run-dir", str(run), "--set", "sft.max_steps=3", "--set", "grpo.max_steps=2",
                 "--set", "grpo.per_device_train_batch_size=8", "--set", "eval.every_steps=0")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = runs.read_summary(run)
    assert summary["status"] == "finished"
    grpo = [r for r in metrics.read_jsonl(run / runs.METRICS) if "reward" in r]
    assert [r["step"] for r in grpo] == [1, 2]  # one line per step: only the main process writes
    assert "world size 2" in out.stdout  # really two processes
    assert (run / runs.ADAPTER / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_multi_process_launch_needs_a_run_dir(tmp_path):
    out = launch(tmp_path, "--set", "grpo.max_steps=1")
    assert out.returncode != 0
    assert "--run-dir" in out.stderr


def test_vllm_server_selects_trl_server_mode(tmp_path):
    from kit.models.plan import Hardware, plan
    from kit.recipe import load_recipe
    from kit.train.trl_args import grpo_config

    recipe = load_recipe(ROOT / "recipes" / "demo.yaml", ["model.vllm_server=http://localhost:8000"])
    cpu = plan(load_recipe(ROOT / "recipes" / "demo.yaml"), Hardware(cuda=False))  # plan refuses a server on CPU
    args = grpo_config(recipe, cpu, tmp_path)
    assert args.use_vllm and args.vllm_mode == "server" and args.vllm_server_base_url == "http://localhost:8000"
    plain = grpo_config(load_recipe(ROOT / "recipes" / "demo.yaml"), cpu, tmp_path)
    assert not plain.use_vllm
