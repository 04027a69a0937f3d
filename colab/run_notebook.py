"""Execute a Colab notebook headless on this machine, top to bottom, in a real IPython kernel (nbclient + ipykernel,
the dev extra), with this checkout instead of a clone: what tests/test_notebooks.py does, and how the CPU demo's
time in the README was measured.

    python colab/run_notebook.py demo                                   # the notebook with its own settings
    python colab/run_notebook.py qwen3-1.7b --set model.name=builtin:tiny --set grpo.max_steps=2 ...
    python colab/run_notebook.py demo --out /tmp/demo-run.ipynb         # keep the executed notebook

It sets the variables the notebooks read: KIT_NOTEBOOK_LOCAL (this checkout: no clone, no pip), KIT_NOTEBOOK_RUNS
(the runs folder, default a new temporary one outside the checkout) and KIT_NOTEBOOK_SET (extra overrides). Prints
each code cell's wall time and the total; a failing cell stops it with the cell's number and its error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "grpo-kit-local"
CELL_TIMEOUT = 1800  # seconds a cell may take (the demo's training cell: a few minutes)


class CellFailed(AssertionError):
    """A code cell raised: the message names the notebook, the cell's number among the code cells, its error."""


def install_kernelspec(folder: Path) -> str:
    """A kernelspec for this interpreter under `folder` (put on JUPYTER_PATH), so the kernel runs the venv that
    runs this, not whichever `python3` kernel the machine has registered."""
    spec = Path(folder) / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "grpo-kit (local)", "language": "python"}))
    paths = [str(folder), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    return KERNEL


def notebook_env(runs_dir: Path, settings: list[str] = (), **extra: str) -> dict:
    """The kernel's environment: the notebook in local mode, its runs in `runs_dir`, `settings` as overrides."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend draws PNGs
    env.update(KIT_NOTEBOOK_LOCAL=str(ROOT), KIT_NOTEBOOK_RUNS=str(runs_dir), KIT_NOTEBOOK_SET=" ".join(settings),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # `kit` is this venv's
               PYDEVD_DISABLE_FILE_VALIDATION="1", **extra)
    return env


def execute(nb, name: str, kernel: str, env: dict, upto: int | None = None, during=None,
            timeout: int = CELL_TIMEOUT) -> list[tuple[int, float]]:
    """Execute `nb`'s code cells in order (up to cell index `upto`) in a fresh kernel, filling in their outputs;
    `during(kernel_pid)` runs in a thread meanwhile. Returns (cell index, seconds) per code cell. A failing cell
    raises CellFailed; a kernel that dies, nbclient's DeadKernelError."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(nb, kernel_name=kernel, timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(ROOT)}})
    times = []
    with client.setup_kernel(env=env):
        if during is not None:
            threading.Thread(target=during, args=(client.km.provisioner.pid,), daemon=True).start()
        number = 0
        for index, cell in enumerate(nb.cells):
            if upto is not None and index > upto:
                break
            if cell.cell_type != "code":
                continue
            number += 1
            t0 = time.time()
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as e:
                raise CellFailed(f"{name}: code cell {number} (cell {index}, id {cell.id}) failed: "
                                 f"{e.ename}: {e.evalue}\n{e}") from None
            times.append((index, time.time() - t0))
    return times


def main(argv: list[str] | None = None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="notebook name: colab/NAME.ipynb")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="an override for the training cell (repeatable)")
    parser.add_argument("--runs", type=Path, help="runs folder (default: a new temporary folder)")
    parser.add_argument("--out", type=Path, help="write the executed notebook here")
    args = parser.parse_args(argv)
    path = ROOT / "colab" / f"{args.name}.ipynb"
    if not path.is_file():
        print(f"error: no notebook colab/{args.name}.ipynb; the names: "
              f"{' '.join(p.stem for p in sorted(path.parent.glob('*.ipynb')))}", file=sys.stderr)
        return 2
    nb = nbformat.read(path, as_version=4)
    scratch = Path(tempfile.mkdtemp(prefix="kit-notebook-"))
    kernel = install_kernelspec(scratch / "jupyter")
    runs_dir = args.runs or scratch / "runs"
    t0 = time.time()
    try:
        times = execute(nb, args.name, kernel, notebook_env(runs_dir, args.settings))
    except CellFailed as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        if args.out:
            nbformat.write(nb, args.out)
    for index, seconds in times:
        first = nb.cells[index].source.strip().splitlines()[0][:70]
        print(f"cell {index:>2}  {seconds:7.1f} s  {first}")
    print(f"total {time.time() - t0:.0f} s ({(time.time() - t0) / 60:.1f} min) | runs: {runs_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
