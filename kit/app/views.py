"""What the app shows, as plain text and tables: recipe summaries, the runs table, a run's details, the curves'
status line, the latest completions. Pure functions of a recipe or a run folder (tests call them directly);
kit/app/ui.py puts them into Gradio widgets. No torch here.
"""

from __future__ import annotations

import html
from pathlib import Path

from kit import runs
from kit.errors import KitError
from kit.models import fit
from kit.recipe import Recipe, iter_fields, load_recipe
from kit.runs import metrics, report
from kit.runs.report import num
from kit.task import answers

MAX_COMPLETION_ROWS = 16


# --- recipes --------------------------------------------------------------------------------------------------


def expected_vram(recipe: Recipe) -> str:
    """kit.models.fit's peak-VRAM estimate, or "-" when the architecture is unknown."""
    try:
        est = fit.estimate(recipe)
    except KitError as e:
        return f"- ({e})"
    if est is None:
        return "-"
    verdict = "fits" if est.fits else "does not fit"
    return f"{est.total_gb:.1f} GiB peak (estimate; {verdict} a {est.gpu_name})"


def stage_steps(recipe: Recipe) -> str:
    return " -> ".join(f"{s.kind} {recipe.stage_steps(s)}" for s in recipe.pipeline())


def recipe_summary(recipe: Recipe, path: Path) -> str:
    rewards = ", ".join(f"{r.name} x{r.weight:g}" for r in recipe.rewards)
    g, m = recipe.grpo, recipe.model
    precision = ("4-bit" if m.load_in_4bit else "full precision") + (", vLLM" if m.fast_inference else "")
    return "\n".join([
        f"**{path.stem}**: {recipe.description or '(no description)'}",
        "",
        f"- **model** `{m.name}`, backend {m.backend} ({precision}; what runs is decided on the machine when "
        "the run starts)",
        f"- **data** `{recipe.data.source}` ({recipe.data.split})",
        f"- **steps** {stage_steps(recipe)}",
        f"- **GRPO** {g.num_generations} answers per question, batch {g.per_device_train_batch_size} x "
        f"{g.gradient_accumulation_steps}, up to {g.max_completion_length} tokens, lr {g.learning_rate:g}, "
        f"beta {g.beta:g}",
        f"- **rewards** {rewards}",
        f"- **expected VRAM** {expected_vram(recipe)}",
        f"- **file** `{path}`",
    ])


def recipe_fields(recipe: Recipe) -> list[list[str]]:
    """[field, this recipe's value, help] for every section field: the help texts live in kit/recipe.py."""
    rows = []
    for name, _default, help_text in iter_fields():
        section, _, field = name.partition(".")
        value = getattr(recipe, section)
        if field:
            value = getattr(value, field)
        elif section == "rewards":
            value = ", ".join(f"{r.name}:{r.weight:g}" for r in value)
        elif section == "stages":
            value = ", ".join(s.kind for s in value) or "(sft if enabled) + grpo"
        rows.append([name, str(value), help_text])
    return rows


# --- runs -----------------------------------------------------------------------------------------------------


class LastReward:
    """The last logged reward of each run, re-read only when its metrics file changed (the runs table refreshes
    every 2 s)."""

    def __init__(self):
        self._seen: dict[Path, tuple[tuple[int, float], float | None]] = {}

    def __call__(self, run: Path) -> float | None:
        path = run / runs.METRICS
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        sig = (st.st_size, st.st_mtime)
        cached = self._seen.get(run)
        if cached is None or cached[0] != sig:
            cached = (sig, report.last_reward(run))
            self._seen[run] = cached
        return cached[1]


def phase_of(summary: dict, state: str) -> str:
    """What a running trainer is doing now ("" when it is not running)."""
    if state != "running":
        return ""
    if not summary:
        return "starting (loading libraries)"
    if summary.get("status") != "running":  # the summary is final, the process is about to exit
        return "exiting"
    return summary.get("phase") or "starting"


RUN_COLUMNS = ["run", "status", "steps", "last reward", "phase", "model", "started"]


def runs_table(ctl, last_reward: LastReward) -> list[list[str]]:
    rows = []
    for run in ctl.run_folders():
        s = runs.read_summary(run)
        state = ctl.status(run)
        phase = phase_of(s, state) or ctl.message(run) or state
        rows.append([run.name, state, report.steps(s), num(last_reward(run)), _short(phase, 90), s.get("model", ""),
                     s.get("started", "")])
    return rows


def run_details(ctl, run: Path | None) -> tuple[str, str]:
    """(markdown summary, log tail) of one run."""
    if run is None:
        return "No run selected. Start one in the Train tab, or `kit train recipes/demo.yaml` in a terminal.", ""
    s = runs.read_summary(run)
    state = ctl.status(run)
    lines = [f"**{run.name}**: {state}" + (f" ({phase_of(s, state)})" if state == "running" else "")]
    lines += [f"- {key}: {value}" for key, value in report.facts(s)]
    lines += [f"- stage {line}" for line in report.stage_lines(s)]
    for note in s.get("notes", []):
        lines.append(f"- note: {note}")
    message = ctl.message(run)
    if message:
        lines.append(f"\n**{'Error' if state == 'failed' else 'Message'}:** {html.escape(message)}")
    for ckpt, problem in runs.torn_checkpoints(run, s):
        lines.append(f"- torn checkpoint: `{ckpt.relative_to(run)}` ({html.escape(problem)}); resume continues "
                     "from the last complete one")
    gains = report.gains(s)
    if gains:
        lines.append(f"\nfirst -> last 20% of steps: {gains}")
    adapter = runs.latest_adapter(run)
    lines.append(f"\n- adapter: `{adapter}`" if adapter else "\n- adapter: none yet (saved when a stage ends)")
    lines.append(f"- folder: `{run}`")
    return "\n".join(lines), runs.log_tail(run, 30)


def train_status(ctl) -> str:
    """The Train tab's line about the run this app started last (or one training outside it)."""
    run = ctl.latest_started()
    if run is None:
        busy = ctl.training_run()
        return f"**{busy.name}** is training (started outside this app)." if busy else "No run started from this app yet."
    s = runs.read_summary(run)
    state = ctl.status(run)
    text = f"**{run.name}**: {state}"
    if state == "running":
        text += f" ({phase_of(s, state)}), step {report.steps(s)}"
    else:
        message = ctl.message(run)
        text += f" after {report.steps(s)} steps" + (
            f": {html.escape(message)}" if message else "")
    return text


def curve_status(ctl, run: Path | None, records: list[dict]) -> str:
    """One line above the curves: the run's state, its step, and the latest reward with the step it was logged
    at (the browser test waits for this line)."""
    if run is None:
        return "No run selected."
    s = runs.read_summary(run)
    state = ctl.status(run)
    head = f"**{run.name}** · {state}" + (f" ({phase_of(s, state)})" if state == "running" else "")
    head += f" · step {report.steps(s)}"
    points = metrics.series(records, "reward")
    if not points:
        return head + " · no GRPO step logged yet (the curves appear with the first one)"
    step, value = points[-1]
    return head + f" · reward {num(value)} at step {step} · {len(points)} GRPO points"


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


# --- chat -----------------------------------------------------------------------------------------------------


def chat_status(ctl) -> str:
    session = ctl.chat
    if session is not None:
        return (f"**Loaded:** {session.label}. The recipe's system prompt is sent first; answers are greedy (or "
                f"sampled at grpo.temperature {session.recipe.grpo.temperature:g}), up to {session.max_new_tokens} "
                "new tokens. Unload frees its memory.")
    busy = ctl.training_run()
    if busy is not None:
        return (f"**Chat is locked:** {busy.name} is training and holds the GPU. A model can load when it has "
                "finished or been stopped.")
    return "No model loaded: choose a run's adapter or a base model and press Load."


def answer_line(text: str) -> str:
    """What kit.data.extract_answer (the rewards' and evaluation's extractor) reads out of an answer."""
    found = answers.extract_answer(text)
    if found is None:
        return "extracted answer: none (no single number inside an &lt;answer&gt; block)"
    return f"extracted answer: **{html.escape(found)}**"


# --- completions ----------------------------------------------------------------------------------------------


def completion_steps(records: list[dict]) -> list[int]:
    """run_steps that have sampled completions, newest first."""
    return sorted({r["run_step"] for r in records if isinstance(r.get("run_step"), int)}, reverse=True)


def completions_table(run: Path, records: list[dict], step: int | None) -> tuple[list[str], list[list], str]:
    """(columns, rows, caption) of the completions sampled at `step` (None: the latest): each reward's score,
    their weighted total (the recipe's weights) and the group-normalised advantage."""
    steps = completion_steps(records)
    if not steps:
        return ["completion"], [], "No completions logged yet (every grpo.completions_every steps)."
    step = steps[0] if step is None else step
    chosen = [r for r in records if r.get("run_step") == step][:MAX_COMPLETION_ROWS]
    recipe = load_recipe(run / runs.RECIPE)
    weights = {r.function: r.weight for r in recipe.rewards}  # completions.jsonl keys rewards by function
    names = [n for n in weights if any(n in (r.get("rewards") or {}) for r in chosen)]
    columns = ["question", "completion", "total"] + [n.removesuffix("_reward") for n in names] + ["advantage"]
    rows = []
    for r in chosen:
        scores = r.get("rewards") or {}
        total = sum(weights[n] * scores[n] for n in names if scores.get(n) is not None)
        question = question_of(r.get("prompt", ""), recipe.data.system_prompt)
        rows.append([question, r.get("completion", ""), round(total, 3)]
                    + [_round(scores.get(n)) for n in names] + [_round(r.get("advantage"))])
    stage = chosen[0].get("stage", "") if chosen else ""
    caption = (f"{len(chosen)} completions sampled at step {step} ({stage}). Reward hacking looks like a high total "
               "with a wrong answer: a format reward paid for an empty or repeated answer block, or length "
               "growing with no gain in correctness.")
    return columns, rows, caption


def question_of(prompt, system_prompt: str) -> str:
    """The question part of a logged prompt: TRL logs the chat-templated prompt as text, so drop everything up to
    the end of the recipe's system prompt (what is left is the question, plus any role words of the template)."""
    if isinstance(prompt, list):  # conversational prompt: the last user turn
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    text = str(prompt)
    if system_prompt and system_prompt in text:
        text = text.split(system_prompt, 1)[1]
    return text.strip()


def _round(value):
    return round(value, 3) if isinstance(value, float) else value


# --- studies (`kit study`) ------------------------------------------------------------------------------------
# A study folder holds study.json (the numbers), study.md (the table) and study.png (the plot): kit/tools/study.py.


def study_folders(root: str | Path = "studies") -> list[Path]:
    """The study folders under `root` (those with a study.json), most recently updated first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "study.json").is_file()]
    return sorted(found, key=lambda p: (p / "study.json").stat().st_mtime, reverse=True)


def study_view(folder: Path | None) -> tuple[str, Path | None]:
    """(study.md's text, study.png or None) of a study folder, for the app's Studies panel."""
    if folder is None:
        return ("No study yet. Run one in a terminal, e.g. `kit study recipes/demo.yaml --vary grpo.beta=0,1e-3 "
                "--seeds 2`; it appears here (folders under ./studies)."), None
    md, png = folder / "study.md", folder / "study.png"
    text = md.read_text(encoding="utf-8", errors="replace") if md.is_file() else \
        f"**{folder.name}**: no study.md yet (the study has not written its table)."
    return text + f"\n\n- folder: `{folder}`", png if png.is_file() else None
