"""The Colab notebooks, executed: every code cell top to bottom in a real IPython kernel (nbclient + ipykernel) on
CPU, as `make test-notebooks` runs them (KIT_TEST_NOTEBOOKS names which; CI: one per code path the generator emits).

The notebooks' own switches make that possible without Colab: KIT_NOTEBOOK_LOCAL (the install cell uses this
checkout: no clone, no pip), KIT_NOTEBOOK_RUNS (the run folder outside the checkout, where Colab puts Google Drive),
KIT_NOTEBOOK_SET (a few steps; GPU recipes on builtin:tiny, their other settings kept: Qwen3's chat-template
arguments, Gemma's path without vLLM). With no GPU the GPU notebooks take their no-GPU branch. A failing cell fails
with its number and its error. Not covered here: Colab, Google Drive, and the GPU half (Unsloth, vLLM, profiles).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import kit
from kit import runs
from kit.recipe import load_recipe
from kit.runs import metrics

ROOT = Path(__file__).resolve().parent.parent
SELECTED = os.environ.get("KIT_TEST_NOTEBOOKS", "").split()
pytestmark = [pytest.mark.notebook,
              pytest.mark.skipif(not SELECTED, reason="make test-notebooks runs these (KIT_TEST_NOTEBOOKS=...)")]

# A few steps of each kind of recipe: enough for curves, a compare table, a trained adapter that exports.
SHORT = ["sft.max_steps=30", "sft.learning_rate=3e-3", "grpo.max_steps=3", "grpo.save_steps=3",
         "grpo.completions_every=1", "eval.limit=32", "eval.every_steps=0"]
# The GPU recipes on builtin:tiny (the warm-up on, so the adapter is not all zero), their other fields unchanged.
ON_TINY = ["model.name=builtin:tiny", "model.max_seq_length=256", "data.source=builtin:arithmetic",
           "sft.enabled=true", "grpo.max_prompt_length=160", "grpo.max_completion_length=32",
           "eval.max_new_tokens=32", "eval.batch_size=32", *SHORT]
# The real model (builtin:smollm2-135m): two optimizer steps a stage, short answers, 16 held-out questions.
ON_REAL = ["sft.max_steps=2", "grpo.max_steps=2", "grpo.save_steps=2", "grpo.max_completion_length=32",
           "eval.limit=16", "eval.max_new_tokens=32", "eval.every_steps=0"]


def overrides(name: str) -> list[str]:
    model = load_recipe(ROOT / "recipes" / f"{name}.yaml").model.name
    if model == "builtin:tiny":
        return SHORT
    if model == "builtin:smollm2-135m":
        return ON_REAL
    return ON_TINY


# ---------------------------------------------------------------------------------------------------------------
# Running a notebook: colab/run_notebook.py


def _runner():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "colab" / "run_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()
CellFailed, notebook_env, execute = RUNNER.CellFailed, RUNNER.notebook_env, RUNNER.execute
CELL_TIMEOUT = 900


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory):
    return RUNNER.install_kernelspec(tmp_path_factory.mktemp("jupyter"))


def keep(nb, name: str) -> None:
    """KIT_TEST_NOTEBOOKS_OUT=DIR: the executed notebook, with its outputs, is written there (to look at, or as a
    CI artifact)."""
    import nbformat

    if os.environ.get("KIT_TEST_NOTEBOOKS_OUT"):
        out = Path(os.environ["KIT_TEST_NOTEBOOKS_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / f"{name}.ipynb")


def read(name: str):
    import nbformat

    return nbformat.read(ROOT / "colab" / f"{name}.ipynb", as_version=4)


def text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "text/plain" in out.get("data", {}):
            parts.append(out.data["text/plain"])
    return "".join(parts)


def pngs(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def cell_with(nb, needle: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and needle in c.source)


# ---------------------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.slow  # trains
@pytest.mark.parametrize("name", SELECTED)
def test_notebook_runs_top_to_bottom(name, kernel_name, tmp_path):
    assert (ROOT / "colab" / f"{name}.ipynb").is_file(), f"KIT_TEST_NOTEBOOKS names {name}: no colab/{name}.ipynb"
    nb = read(name)
    runs_dir = tmp_path / "drive" / "runs"  # outside the checkout, where Colab keeps the run: Google Drive
    t0 = time.time()
    try:
        execute(nb, name, kernel_name, notebook_env(runs_dir, overrides(name)))
    finally:
        keep(nb, name)
    print(f"\n{name}: executed in {time.time() - t0:.0f} s")

    install = text_of(nb.cells[cell_with(nb, "REPO_URL =")])
    assert f"grpo-kit {kit.__version__} in {ROOT}" in install and "WARNING" not in install
    if nb.metadata.get("accelerator") == "GPU":
        assert "GPU: none" in install  # the no-GPU branch
    train = nb.cells[cell_with(nb, '"kit", "train"')]
    assert pngs(train) >= 1, "the training cell drew no reward plot"
    shown = text_of(train)
    assert f"run folder: {runs_dir / f'{name}-colab'}" in shown and "kit train: finished" in shown
    run = runs_dir / f"{name}-colab"
    assert runs.read_summary(run)["status"] == "finished"
    assert not (ROOT / "runs" / f"{name}-colab").exists()
    saved = load_recipe(run / runs.RECIPE)
    assert saved.data == load_recipe(ROOT / "recipes" / f"{name}.yaml", overrides(name)).data  # the recipe kept

    evaluated = text_of(nb.cells[cell_with(nb, "kit compare")])
    assert f"run      {run}" in evaluated and "status   finished" in evaluated  # kit show ...
    assert "stage   step  correctness_reward" in evaluated  # ... and its reward table
    assert "B - A" in evaluated and "strict gain, question by question" in evaluated  # kit compare's table
    if saved.sft.enabled:
        assert (run / "stages" / "1-sft").is_dir()  # compared: after the warm-up vs after GRPO
    chat = text_of(nb.cells[cell_with(nb, "ChatSession.load")])
    assert f"{run.name} (trained adapter) -> " in chat and "extracted answer: " in chat and "| gold answer: " in chat
    exported = text_of(nb.cells[cell_with(nb, "kit export")])
    assert f"exported lora to {run / 'export-lora'}" in exported and (run / "export-lora").is_dir()
    listed = {line.split()[-1] for line in exported.splitlines() if line.strip()}  # `ls -la`: names last
    assert {"adapter", "export-lora", "metrics.jsonl", "summary.json"} <= listed


@pytest.mark.slow  # trains
def test_kernel_killed_mid_training_resumes(kernel_name, tmp_path):
    """The Colab session ends in the middle of training: first only the kernel dies (Runtime -> Restart session:
    `kit train` goes on, the cell run again watches it), then the kernel and `kit train` together (the machine is
    gone). The notebook run again in a fresh kernel resumes from the run folder and finishes it."""
    name, sft, grpo = "demo", 20, 8
    settings = [f"sft.max_steps={sft}", "sft.learning_rate=3e-3", f"grpo.max_steps={grpo}", "grpo.save_steps=2",
                "grpo.completions_every=0", "eval.every_steps=0"]
    runs_dir = tmp_path / "drive" / "runs"
    run = runs_dir / f"{name}-colab"
    env = notebook_env(runs_dir, settings)
    upto = cell_with(read(name), '"kit", "train"')

    def grpo_steps() -> list[int]:
        return [r["step"] for r in metrics.read_jsonl(run / runs.METRICS)
                if r.get("stage") == "2-grpo" and "loss" in r]

    killed = []  # the pid in summary.json at each kill: which kit train was training then

    def kill_when(ready, trainer_too: bool):
        def watch(kernel_pid):
            deadline = time.time() + CELL_TIMEOUT
            while not ready() and time.time() < deadline:
                time.sleep(0.1)
            trainer = runs.read_summary(run).get("pid")
            killed.append(trainer)
            os.kill(kernel_pid, signal.SIGKILL)
            if trainer_too:
                os.kill(int(trainer), signal.SIGKILL)
        return watch

    from nbclient.exceptions import DeadKernelError

    # 1. The kernel dies once GRPO has begun; kit train, in its own session, goes on.
    first = read(name)
    with pytest.raises(DeadKernelError):
        execute(first, name, kernel_name, env, upto, kill_when(lambda: grpo_steps(), trainer_too=False))
    trainer = runs.read_summary(run)["pid"]
    assert runs.status(run) == "running"
    # 2. A fresh kernel: the training cell watches the running kit train (no second one); then the machine goes.
    second = read(name)
    with pytest.raises(DeadKernelError):
        execute(second, name, kernel_name, env, upto,
                kill_when(lambda: 5 in grpo_steps() and (run / "stages/2-grpo/checkpoints/checkpoint-4").is_dir()
                          and "watching kit train" in text_of(second.cells[upto]), trainer_too=True))
    assert killed == [trainer, trainer]  # the same kit train all along: the second kernel started none
    assert f"watching kit train (pid {trainer})" in text_of(second.cells[upto])
    deadline = time.time() + 30  # the orphaned process is reaped by the machine's init, not at once
    while runs.status(run) == "running" and time.time() < deadline:
        time.sleep(0.2)
    assert runs.status(run) == "failed"  # the summary still says running; its process is gone
    before = metrics.read_jsonl(run / runs.METRICS)
    # 3. The notebook again, in a fresh kernel: it resumes from the last checkpoint and finishes.
    third = read(name)
    execute(third, name, kernel_name, env, upto)
    shown = text_of(third.cells[upto])
    assert f"$ kit train --resume {run}" in shown and "kit train: finished" in shown
    summary = runs.read_summary(run)
    assert summary["status"] == "finished" and summary["run_step"] == sft + grpo
    assert [s["status"] for s in summary["stages"]] == ["finished", "finished"]
    after = metrics.read_jsonl(run / runs.METRICS)
    assert sorted(grpo_steps()) == list(range(1, grpo + 1))  # each GRPO step once: none lost, none twice
    # Nothing trained again: the warm-up and GRPO up to the checkpoint kept their records as they were.
    kept = [r for r in before if r.get("stage") == "1-sft" or r.get("step", 0) <= 4]
    assert kept and all(r in after for r in kept)
    assert (run / "adapter" / "adapter_config.json").is_file()


def test_install_cell_warns_when_the_kit_is_not_the_notebooks_version(kernel_name, tmp_path):
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "colab" / "make_notebooks.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    nb = nbformat.reads(gen.render(ROOT / "recipes" / "demo.yaml", version="0.0.1"), as_version=4)
    install = cell_with(nb, "REPO_URL =")
    execute(nb, "demo (0.0.1)", kernel_name, notebook_env(tmp_path, []), upto=install)
    assert (f"WARNING: this notebook was generated by grpo-kit 0.0.1 but grpo-kit {kit.__version__} is installed"
            in text_of(nb.cells[install]))


def test_a_failing_cell_names_its_number_and_error(kernel_name, tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("x / 0")]
    with pytest.raises(CellFailed, match=r"t: code cell 2 \(cell 2, id .*\) failed: ZeroDivisionError: division"):
        execute(nb, "t", kernel_name, notebook_env(tmp_path, []))


@pytest.mark.slow  # trains
def test_a_run_left_running_by_a_session_on_another_machine_resumes(tmp_path):
    """What Drive holds after a Colab session ended mid-run: "running", on a host that is not this one. While that
    run's heartbeat is fresh it may still be training there, and --resume refuses, naming the host; once the
    heartbeat is older than 3 beats the machine is gone, and the notebook's --resume continues the run."""
    from kit.errors import KitError
    from kit.train.flow import train

    run = train(ROOT / "recipes" / "demo.yaml", ["sft.max_steps=4", "grpo.max_steps=2", "grpo.save_steps=1",
                                                 "eval.every_steps=0"], run_dir=tmp_path / "demo-colab")
    summary = runs.read_summary(run)
    runs.write_summary(run, dict(summary, status="running", host="colab-machine-that-is-gone", pid=4242))
    with pytest.raises(KitError, match=r"still training on colab-machine-that-is-gone \(its heartbeat is \d+ s old\)"):
        train(resume=run, overrides=["grpo.max_steps=3"])
    (run / runs.HEARTBEAT).write_text(f"{time.time() - 4 * runs.HEARTBEAT_S:.0f}\n")
    assert runs.status(run) == "failed"
    train(resume=run, overrides=["grpo.max_steps=3"])
    assert runs.read_summary(run)["status"] == "finished"
