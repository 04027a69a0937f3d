"""Write the Colab notebooks (colab/<recipe>.ipynb) and their "Open in Colab" badges (docs/colab.md) from the
recipes, so they never drift from them. Same input, same bytes: no timestamps, fixed cell ids.

    python colab/make_notebooks.py              # or: make notebooks
    python colab/make_notebooks.py --root /tmp/x   # write the same files under another root (tests compare)

One notebook per recipe whose model ships a config in kit/configs/ (the 16 GB GPU recipes; the CPU demo has its
own `make demo`). Each: install (Unsloth and vLLM in the version profile for the GPU: t4 or main), GPU check and
`kit fit`, training in a background process with a live reward plot, evaluation, chat, export, and optionally the
app with a public link.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kit import fit  # noqa: E402  (the kit's own recipe reader and estimator; neither imports torch)
from kit.recipe import list_recipes, load_recipe  # noqa: E402

# Placeholder until the kit has a public home: the notebooks clone this, the badges point at it.
REPO_URL = "https://github.com/grpo-kit/grpo-kit"
BRANCH = "main"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def colab_url(name: str) -> str:
    owner_repo = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/colab/{name}.ipynb"


def notebook_recipes(root: Path = ROOT) -> list[Path]:
    """The recipes that get a notebook: those whose model architecture ships with the kit (GPU recipes)."""
    return [p for p in list_recipes(root / "recipes") if fit.config_path(load_recipe(p).model.name) is not None]


def header_lines(path: Path) -> list[str]:
    """The recipe's opening comment block, without the '#'."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" "))
    return lines


def _override_example(path: Path) -> list[str]:
    for line in header_lines(path):
        if line.startswith("Override:"):
            parts = line.split()
            return [p for p in parts if p.startswith(("--set", "grpo.", "model.", "data.", "eval.", "sft."))]
    return []


# ---------------------------------------------------------------------------------------------------------------
# Cells


def cells_for(path: Path, root: Path = ROOT) -> list[tuple[str, str]]:
    """(kind, source) of each cell of the notebook for the recipe at `path`."""
    recipe = load_recipe(path)
    name = path.stem
    rel = path.relative_to(root).as_posix()
    est = fit.estimate(recipe)
    head = header_lines(path)
    title = head[0] if head else recipe.description
    about = "\n".join(line for line in head[1:] if line and not line.startswith(("Run:", "Override:")))
    vllm = recipe.model.fast_inference
    example = _override_example(path)
    cells = []

    cells.append(("markdown", f"""# {title}

[![Open In Colab]({BADGE})]({colab_url(name)})

Recipe [`{rel}`]({REPO_URL}/blob/{BRANCH}/{rel}): {recipe.description}.

```
{about}
```

**Runtime → Change runtime type → T4 GPU** (or any larger NVIDIA GPU), then run the cells in order. The kit's own
estimate for this recipe on a 16 GB GPU: **{est.total_gb:.1f} GiB** peak (`kit fit` below prints the terms).
The first training step takes a few minutes while Unsloth compiles its kernels; it is not hung.

This notebook is generated from the recipe by `colab/make_notebooks.py`; edit the recipe, not the notebook.
`REPO_URL` below is a placeholder until the kit's repository is public."""))

    cells.append(("markdown", """## 1. Install

Clones the kit and installs it with Unsloth, and vLLM when the recipe uses it, in the version profile for this GPU
(exact sets: `profiles/`):

- **T4** (compute capability 7.5): profile **t4**, the set Unsloth's own T4 GRPO notebooks install: vLLM 0.11.2,
  torch 2.9.0, transformers 4.56.2, TRL 0.22.2 (newer vLLM dropped the attention backend a T4 needs).
- **newer GPUs** (L4, A100, ...): profile **main**: vLLM 0.26.0, torch 2.11.0 (CUDA 13: NVIDIA driver >= 580),
  transformers 5.17.0, TRL 1.14.0.

`USE_VLLM = False` installs no vLLM: Unsloth then generates the rollouts (slower, same results). If vLLM fails to
start, training stops with one line naming that switch (`--set model.fast_inference=false`). Details and what
is tested where: [docs/install.md]({repo}/blob/{branch}/docs/install.md).""".format(repo=REPO_URL, branch=BRANCH)))

    cells.append(("code", f"""import os, subprocess

REPO_URL = "{REPO_URL}"  # placeholder: the kit's git repository
RECIPE = "{rel}"
USE_VLLM = {vllm}  # the recipe's model.fast_inference; False: no vLLM, Unsloth generates (slower)

def sh(cmd, check=True):
    print("$", cmd, flush=True)
    return subprocess.run(cmd, shell=True, check=check).returncode

gpu = subprocess.run("nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader", shell=True,
                     capture_output=True, text=True).stdout.strip().splitlines()
if not gpu:
    raise SystemExit("No NVIDIA GPU: Runtime -> Change runtime type -> T4 GPU, then run this cell again")
name, cap, memory = [x.strip() for x in gpu[0].split(",")]
PROFILE = "t4" if cap == "7.5" or "T4" in name else "main"  # profiles/<PROFILE>-gpu.txt: exact versions
print(f"GPU: {{name}} (compute capability {{cap}}, {{memory}}) | profile: {{PROFILE}} | vLLM: {{USE_VLLM}}")

if not os.path.isdir("grpo-kit"):
    sh(f"git clone --depth 1 {{REPO_URL}} grpo-kit")
os.chdir("grpo-kit")
extras = ".[gpu,vllm]" if USE_VLLM else ".[gpu]"
sh(f"pip install -q -c profiles/{{PROFILE}}-gpu.txt -e '{{extras}}'")
os.environ["UNSLOTH_VLLM_STANDBY"] = "1"  # vLLM frees its KV cache while training (Unsloth's memory-efficient RL)
os.environ["UNSLOTH_DISABLE_STATISTICS"] = "1\""""))

    cells.append(("markdown", """## 2. GPU check

`kit doctor` prints the GPU, the installed versions, the install profile they match and any known-bad
combination with the command that fixes it (paste it into an issue if something fails); `kit fit` estimates the
peak memory of this recipe on this GPU, term by term, and says what to change if it does not fit."""))
    cells.append(("code", """print(f"install profile: {PROFILE} (profiles/{PROFILE}-gpu.txt) | vLLM: {USE_VLLM}")
sh(f"kit doctor {RECIPE}", check=False)
sh(f"kit fit {RECIPE}", check=False)"""))

    override_hint = (" e.g. `OVERRIDES = [" + ", ".join(f'"{p}"' for p in example) + "]`") if example else ""
    cells.append(("markdown", f"""## 3. Train, with a live reward plot

`kit train` runs in a background process and writes the run folder (`metrics.jsonl`, `completions.jsonl`,
`summary.json`, the adapter); this cell plots the rewards from it every 20 s. Interrupting the cell (■) stops
training cleanly after the current step, with a checkpoint; running the cell again resumes it. Change settings
with `--set` overrides{override_hint}."""))
    cells.append(("code", f"""import signal, time
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import clear_output

from kit import metrics, runs

OVERRIDES = []  # e.g. ["--set", "grpo.max_steps=50"]
RUN_DIR = Path("runs") / "{name}-colab"
LOG = Path("runs") / "{name}-colab.log"
LOG.parent.mkdir(exist_ok=True)
resume = (RUN_DIR / "recipe.yaml").exists()
if resume:
    cmd = ["kit", "train", "--resume", str(RUN_DIR)]
else:
    cmd = ["kit", "train", RECIPE, "--run-dir", str(RUN_DIR), *OVERRIDES]
print("$", " ".join(cmd))
# its own session: only the SIGINT forwarded below reaches it (a second one would abort without saving)
proc = subprocess.Popen(cmd, stdout=open(LOG, "a"), stderr=subprocess.STDOUT, start_new_session=True)

def show():
    records = metrics.read_jsonl(RUN_DIR / "metrics.jsonl")
    summary = runs.read_summary(RUN_DIR)
    clear_output(wait=True)
    keys = metrics.reward_keys(records)
    if keys:
        fig, ax = plt.subplots(figsize=(10, 4))
        for key in keys:
            points = metrics.series(records, key)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=key.replace("rewards/", "").replace("/mean", ""), lw=2 if key == "reward" else 1)
        ax.set_xlabel("step"); ax.set_ylabel("mean reward"); ax.grid(alpha=0.3); ax.legend(fontsize=8)
        plt.show()
    print(f"status: {{summary.get('status', 'starting')}} | {{summary.get('phase', '')}} | "
          f"step {{summary.get('run_step', 0)}}/{{summary.get('max_steps', '?')}}")
    print("".join(LOG.read_text(errors="replace").splitlines(True)[-8:])[-2000:])

try:
    while proc.poll() is None:
        show()
        time.sleep(20)
except KeyboardInterrupt:
    proc.send_signal(signal.SIGINT)  # kit saves a checkpoint and stops after this step
    proc.wait()
show()
print("kit train exited with", proc.returncode, "- full log:", LOG)"""))

    cells.append(("markdown", """## 4. Evaluate

Greedy GSM8K accuracy on held-out questions: `kit eval` scores the trained adapter, `kit compare` puts the base
model beside it on the same questions with a 95% interval. `EVAL_LIMIT` questions each (more: tighter interval,
longer wait)."""))
    cells.append(("code", """EVAL_LIMIT = 100
sh(f"kit show {RUN_DIR}")
sh(f"kit compare {RUN_DIR} --limit {EVAL_LIMIT}")"""))

    cells.append(("markdown", """## 5. Chat with the trained model

Loads the base model with the run's adapter (through vLLM with a LoRA request when the run used it) and answers
one question in the trained layout. Free it (next cell) before exporting or launching the app: one model on the
GPU at a time. vLLM does not always hand its memory back inside a notebook; if a later step runs out of memory,
restart the session (Runtime → Restart session): the run folder stays on disk, under `grpo-kit/runs/` (copy it
to Drive to keep it after the Colab session ends)."""))
    cells.append(("code", """import gc

from kit import data, runs
from kit import model as kit_model
from kit.generation import Generator
from kit.recipe import load_recipe

recipe = load_recipe(RUN_DIR / "recipe.yaml")
model, tokenizer, lora_request = kit_model.load_for_inference(recipe, runs.latest_adapter(RUN_DIR))
chat = Generator(model, tokenizer, lora_request)

question = "A baker makes 24 muffins an hour for 3 hours, then sells 5 boxes of 12. How many muffins are left?"
answer = chat.generate([data.to_prompt(question, recipe.data.system_prompt)],
                       max_new_tokens=recipe.grpo.max_completion_length)[0][0]
print(answer)
print("\\nextracted answer:", data.extract_answer(answer))"""))
    cells.append(("code", """# Free the GPU for the next steps
import torch
del chat, model
gc.collect()
torch.cuda.empty_cache()"""))

    cells.append(("markdown", """## 6. Export

`lora` copies the adapter (small); `merged16` merges it into the 16-bit base (a standalone model); `gguf` writes a
llama.cpp / Ollama file (Unsloth downloads and builds llama.cpp the first time: several minutes). Each refuses an
all-zero (untrained) adapter."""))
    cells.append(("code", """EXPORT_FORMATS = ["lora"]  # add "merged16" and/or "gguf"
for fmt in EXPORT_FORMATS:
    extra = " --quantization q4_k_m" if fmt == "gguf" else ""
    sh(f"kit export {RUN_DIR} --format {fmt}{extra}")
!ls -la {RUN_DIR}"""))

    cells.append(("markdown", """## 7. Optional: the app, with a public link

The Gradio app shows every run's curves and completions and lets you chat with a checkpoint. `--share` prints a
public gradio.live URL behind a login: this cell makes a password and prints the user and password (keep them to
yourself; anyone with the link and the password can start runs while this cell runs, ■ stops it)."""))
    cells.append(("code", """LAUNCH_APP = False
if LAUNCH_APP:
    import secrets
    os.environ["KIT_UI_AUTH"] = f"kit:{secrets.token_urlsafe(12)}"
    print("app login -> user: kit   password:", os.environ["KIT_UI_AUTH"].split(":", 1)[1])
    sh("python app.py --share", check=False)"""))
    return cells


def render(path: Path, root: Path = ROOT) -> str:
    """The notebook for one recipe, as the exact text written to disk."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "accelerator": "GPU",
        "colab": {"gpuType": "T4", "provenance": []},
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells_for(path, root)):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = f"{path.stem.replace('.', '-')}-{i:02d}"  # fixed ids: regenerating changes nothing
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4) + "\n"


def render_badges(paths: list[Path]) -> str:
    rows = []
    for path in paths:
        recipe = load_recipe(path)
        est = fit.estimate(recipe)
        rows.append(f"| [![Open In Colab]({BADGE})]({colab_url(path.stem)}) | `{path.stem}` | {recipe.model.name} "
                    f"| {'vLLM' if recipe.model.fast_inference else 'Unsloth/HF'} | {est.total_gb:.1f} GiB |")
    return ("# Colab notebooks\n\n"
            "One notebook per 16 GB recipe, generated from the recipe by `colab/make_notebooks.py` (`make "
            "notebooks`);\nedit the recipe and regenerate, never the notebook. Each installs the kit, checks the GPU "
            "with `kit fit`,\ntrains with a live reward plot, evaluates, chats, exports, and can launch the app with a "
            "share link.\n\n"
            f"The links point at `{REPO_URL}` (branch `{BRANCH}`), a placeholder until the kit is published: change"
            "\n`REPO_URL` in `colab/make_notebooks.py` and regenerate.\n\n"
            "| Open | recipe | model | rollouts | est. peak (16 GB GPU, `kit fit`) |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\n"
            "Each notebook installs the version profile for its GPU (docs/install.md): on a T4 profile t4 (vLLM "
            "0.11.2,\ntransformers 4.56.2, TRL 0.22.2, as Unsloth's own T4 notebooks), on newer GPUs profile main "
            "(vLLM 0.26.0,\ntransformers 5.17.0, TRL 1.14.0). Neither has been run on Colab by this project yet.\n")


def render_all(root: Path = ROOT) -> dict[str, str]:
    """Every generated file, by path relative to the repository root."""
    paths = notebook_recipes(root)
    files = {f"colab/{p.stem}.ipynb": render(p, root) for p in paths}
    files["docs/colab.md"] = render_badges(paths)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="write under this folder (default: the repository)")
    args = parser.parse_args(argv)
    for rel, text in render_all().items():
        target = args.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
