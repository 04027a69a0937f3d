"""`kit study`: which GRPO setting helps, read against the noise. A baseline (the recipe with the --set overrides)
and one trial per varied value, each a real run folder, each compared with the baseline on the same held-out
questions (kit compare's numbers and paired 95% intervals), beside its training time and final KL.

    kit study recipes/demo.yaml --vary grpo.beta=0,1e-4,1e-3 --vary grpo.num_generations=4,8 --seeds 2

- One field changes at a time (--grid: every combination). A value equal to the baseline's is the baseline.
- Trials that change only GRPO fields (grpo.*, rewards) start from the baseline's warm-up: the baseline trains
  its SFT stage once; each such trial's run folder gets a copy of that finished stage (its adapter hard-linked,
  its recipe and metrics copied, stages/1-sft/reused.json saying where it came from), its summary marks the stage
  finished, and `kit.train.flow.train(resume=...)` trains the rest, exactly as a resumed run would. Trials that
  change anything the warm-up reads (model.*, data.*, sft.*, grpo.optim) train their own.
- Varying grpo.num_generations keeps the questions per step of the baseline: per_device_train_batch_size (else
  gradient_accumulation_steps) is scaled with G, and the trial's changes say so.
- --seeds N: every configuration runs with grpo.seed = the recipe's + 0..N-1, and each trial is compared with the
  baseline of its own seed; the table shows the seed-to-seed spread.
- Everything is evaluated with the baseline's settings (questions, system prompt, token budget), so the trials
  answer the same test. Results are cached in each run folder's eval/ (kit/eval), finished trials are reused,
  an interrupted one resumes: the same command again redoes nothing.

The study folder (default studies/<recipe name>): one run folder per trial, study.json (the numbers), study.md
(the table), study.png (each trial's strict accuracy difference with its interval). A folder made with other
arguments is refused, naming the difference. No torch here (training and evaluation import it when they run).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import statistics
import time
import types
from pathlib import Path
from typing import Any

import yaml

from kit import runs
from kit.errors import KitError, RecipeError
from kit.eval.compare import _evaluate_sides
from kit.eval.evaluate import Side, _name, _rows, _saved, _settings
from kit.eval.scoring import comparison
from kit.models.plan import plan as plan_for
from kit.recipe import Recipe, load_recipe, recipe_to_dict
from kit.runs import metrics
from kit.task.rewards import function_name
from kit.train.flow import train
from kit.train.log import say
from kit.train.preflight import check_grpo_args, keep_reward_files

STUDY_JSON, STUDY_MD, STUDY_PNG = "study.json", "study.md", "study.png"
REUSED = "reused.json"  # in a trial's stages/1-sft/: the run whose finished warm-up it copies
METRIC_NAMES = {"accuracy_strict": "strict", "accuracy_lenient": "lenient", "format_rate": "format"}
ARG_FLAGS = {"vary": "--vary", "set": "--set", "seeds": "--seeds", "limit": "--limit", "samples": "--samples",
             "grid": "--grid"}
# The fields the SFT warm-up reads besides model.*, data.*, sft.* and its stage (kit/train/flow.py, stages.py,
# trl_args.common_args, models/plan.py): a trial that changes one of these trains its own warm-up.
WARMUP_GRPO_FIELDS = ("grpo.seed", "grpo.optim")


@dataclasses.dataclass
class Trial:
    name: str                  # "baseline", "grpo.beta=1e-3", "grpo.beta=1e-3+grpo.epsilon=0.1" (--grid)
    seed_index: int
    seed: int
    overrides: list[str]       # --set, the seed, the varied values (and a batch scaled with G)
    recipe: Recipe
    changes: dict[str, Any]    # every field that differs from the baseline of its seed, resolved
    folder: Path
    shares_warmup: bool = False

    @property
    def is_baseline(self) -> bool:
        return self.name == "baseline"


# ---------------------------------------------------------------------------------------------------------------
# The plan: every trial's recipe, validated before anything trains


def split_values(text: str) -> list[str]:
    """`v1,v2,...` split on the commas outside brackets (a list value stays whole).

    >>> split_values("0,1e-4, 1e-3"), split_values("[q_proj,v_proj],[q_proj]")
    (['0', '1e-4', '1e-3'], ['[q_proj,v_proj]', '[q_proj]'])
    """
    values, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return values


def parse_vary(items: list[str]) -> dict[str, list[str]]:
    """{field: [value texts]} from --vary section.field=v1,v2 items; one-line errors for what no trial can be."""
    varied: dict[str, list[str]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = split_values(text) if sep else []
        if not sep or not key or not text.strip() or any(not v for v in values):
            raise KitError(f"--vary {item!r}: write section.field=v1,v2 (e.g. --vary grpo.beta=0,1e-3)")
        section, dot, name = key.partition(".")
        if not dot or not name:
            raise KitError(f"--vary {key}: vary one field, section.field (e.g. grpo.beta or rewards.format_reward)")
        if section in ("eval", "run"):
            raise KitError(f"--vary {key}: {section}.* says how runs are measured or stored, not how they train; a "
                           f"study holds it fixed for every trial (set it with --set {key}=...)")
        if key == "grpo.seed":
            raise KitError("--vary grpo.seed: seeds are what a study reads differences against; use --seeds N "
                           "(every configuration then runs with grpo.seed = the recipe's + 0..N-1)")
        if key in varied:
            raise KitError(f"--vary {key} is given twice; list all its values in one: --vary {key}=v1,v2")
        if len(set(values)) != len(values):
            raise KitError(f"--vary {key}: a value is listed twice ({text})")
        varied[key] = values
    if not varied:
        raise KitError("kit study needs at least one --vary section.field=v1,v2")
    return varied


def flat(recipe: Recipe) -> dict[str, Any]:
    """The recipe as {section.field: value}; rewards as rewards.<function>: weight (how --set names them)."""
    out = {}
    for section, value in recipe_to_dict(recipe).items():
        if section == "rewards":
            out.update({f"rewards.{function_name(r['name'])}": r["weight"] for r in value})
        elif isinstance(value, dict):
            out.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            out[section] = value
    return out


def differences(a: Recipe, b: Recipe, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """{field: b's value} for every field where b differs from a (a reward in only one: its weight or None)."""
    fa, fb = flat(a), flat(b)
    return {k: fb.get(k) for k in dict.fromkeys([*fa, *fb])
            if fa.get(k) != fb.get(k) and not k.startswith(skip)}


def warmup_key(recipe: Recipe) -> Any:
    """What the SFT warm-up is trained from (None: the recipe has none). Equal keys: the same warm-up."""
    stages = recipe.pipeline()
    if not stages or stages[0].kind != "sft":
        return None
    reads = {k: v for k, v in flat(recipe).items()
             if k.split(".")[0] in ("model", "data", "sft") or k in WARMUP_GRPO_FIELDS}
    return json.dumps([dataclasses.asdict(stages[0]), reads], sort_keys=True, default=str)


def _scaled_batch(base: Recipe, values: dict[str, str]) -> list[str]:
    """Overrides that keep the baseline's questions per step (batch x grad-accum / G) when G changes."""
    if "grpo.num_generations" not in values or any(
            k in values for k in ("grpo.per_device_train_batch_size", "grpo.gradient_accumulation_steps")):
        return []
    try:
        g = yaml.safe_load(values["grpo.num_generations"])
    except yaml.YAMLError:
        return []
    if isinstance(g, bool) or not isinstance(g, int) or g < 2:
        return []  # load_recipe says what is wrong with it
    b = base.grpo
    questions = b.per_device_train_batch_size * b.gradient_accumulation_steps // b.num_generations
    total = questions * g
    if total % b.gradient_accumulation_steps == 0:
        return [f"grpo.per_device_train_batch_size={total // b.gradient_accumulation_steps}"]
    if total % b.per_device_train_batch_size == 0:
        return [f"grpo.gradient_accumulation_steps={total // b.per_device_train_batch_size}"]
    raise KitError(f"--vary grpo.num_generations={g}: {questions} questions per step x {g} answers = {total} "
                   f"completions, which neither grpo.per_device_train_batch_size x {b.gradient_accumulation_steps} nor "
                   f"{b.per_device_train_batch_size} x grpo.gradient_accumulation_steps makes; pick another G or set "
                   "the batch with --set")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")[:120]


def plan_study(recipe_path: str | Path, vary: list[str], sets: list[str] = (), seeds: int = 1, grid: bool = False,
               out: str | Path | None = None) -> tuple[Path, list[Trial], list[str]]:
    """(study folder, trials in the order they run: per seed the baseline, then its trials, notes). Every trial's
    recipe is loaded and validated here: a bad field or value fails before anything trains."""
    varied = parse_vary(list(vary))
    sets = list(sets)
    try:
        base = load_recipe(recipe_path, sets)
    except RecipeError as e:
        raise KitError(f"kit study: {e}") from None
    out = Path(out) if out else Path("studies") / _slug(Path(recipe_path).stem)
    if seeds < 1:
        raise KitError(f"--seeds {seeds}: at least 1")
    if grid:
        combos = [dict(zip(varied, values)) for values in itertools.product(*varied.values())]
    else:
        combos = [{key: v} for key, values in varied.items() for v in values]
    trials, notes, skipped = [], [], set()
    for i in range(seeds):
        seed = base.grpo.seed + i
        seed_sets = [*sets, f"grpo.seed={seed}"]
        baseline_recipe = load_recipe(recipe_path, seed_sets)
        baseline = Trial("baseline", i, seed, seed_sets, baseline_recipe, {}, out / f"baseline-seed{seed}")
        trials.append(baseline)
        key = warmup_key(baseline_recipe)
        for combo in combos:
            name = "+".join(f"{k}={v}" for k, v in combo.items())
            overrides = [*seed_sets, *(f"{k}={v}" for k, v in combo.items())]
            overrides += _scaled_batch(baseline_recipe, combo)
            try:
                recipe = load_recipe(recipe_path, overrides)
            except RecipeError as e:
                raise KitError(f"--vary {name}: {e}") from None
            changes = differences(baseline_recipe, recipe)
            if not changes:
                if name not in skipped:
                    notes.append(f"{name} is the baseline's own value: the baseline stands for it")
                    skipped.add(name)
                continue
            trials.append(Trial(name, i, seed, overrides, recipe, changes, out / f"{_slug(name)}-seed{seed}",
                                shares_warmup=key is not None and warmup_key(recipe) == key))
    if not any(not t.is_baseline for t in trials):
        raise KitError("kit study: every varied value is the baseline's own; nothing to compare")
    folders = [t.folder.name for t in trials]
    if len(set(folders)) != len(folders):
        raise KitError("kit study: two trials would share a run folder name; write the values differently")
    return out, trials, notes


def preflight(trials: list[Trial]) -> None:
    """What `kit train` checks before it loads a model (the plan on this machine; the GRPO fields against this
    TRL), for every trial before the first one trains."""
    seen = set()
    for t in trials:
        key = json.dumps({k: v for k, v in flat(t.recipe).items() if k != "grpo.seed"}, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            plan_for(t.recipe)
            check_grpo_args(t.recipe)
        except KitError as e:
            raise KitError(f"{'the baseline' if t.is_baseline else '--vary ' + t.name}: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# The study folder: the same arguments continue it, other ones are refused


def study_args(recipe_path, vary, sets, seeds, limit, samples, grid) -> dict:
    return {"recipe": str(recipe_path), "vary": list(vary), "set": list(sets), "seeds": seeds, "limit": limit,
            "samples": samples, "grid": bool(grid)}


def _shown(key: str, value) -> str:
    flag = ARG_FLAGS[key]
    if key == "grid":
        return flag if value else f"no {flag}"
    if isinstance(value, list):
        return " ".join(f"{flag} {v}" for v in value) if value else f"no {flag}"
    return f"{flag} {value}" if value is not None else f"no {flag}"


def check_folder(out: Path, args: dict, trials: list[Trial]) -> dict | None:
    """The study.json already in `out` (None: a new study). Refuses, in one line, a folder made with other arguments,
    a run folder trained from another recipe, a folder that holds something else, and a trial still training."""
    study = None
    if (out / STUDY_JSON).is_file():
        try:
            study = json.loads((out / STUDY_JSON).read_text())
        except json.JSONDecodeError:
            raise KitError(f"{out / STUDY_JSON} is not readable JSON; move the folder away or pass another --out") \
                from None
        before = study.get("args", {})
        for key in ARG_FLAGS:
            if before.get(key) != args.get(key):
                raise KitError(f"{out} holds a study made with {_shown(key, before.get(key))}, not "
                               f"{_shown(key, args.get(key))}; run it with the same arguments to continue it, or "
                               "pass another --out")
    elif out.is_dir() and any(out.iterdir()):
        raise KitError(f"{out} exists and is not a study folder (it has no {STUDY_JSON}); pass another --out")
    for t in trials:
        if not (t.folder / runs.RECIPE).is_file():
            continue
        try:
            saved = load_recipe(t.folder / runs.RECIPE)
        except KitError as e:
            raise KitError(f"{t.folder}: {e}") from None
        changed = differences(t.recipe, saved, skip=("run.",))
        if changed:
            key = next(iter(changed))
            raise KitError(f"{t.folder} was trained with {key}={changed[key]}, this study asks for "
                           f"{flat(t.recipe).get(key)} (did the recipe file change?); pass another --out")
        if runs.status(t.folder) == "running":
            raise KitError(f"{t.folder} is still training (pid {runs.read_summary(t.folder).get('pid')}); is another "
                           "`kit study` running on this folder?")
    return study


# ---------------------------------------------------------------------------------------------------------------
# Training: the baseline, then trials (from its warm-up where they share it)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


def stage_seconds(stage_dir: Path) -> float:
    """Seconds a stage trained, from its metrics (elapsed_s counts from the trainer's start in each process; a
    resumed stage adds its sessions)."""
    total, last = 0.0, 0.0
    for r in metrics.read_jsonl(stage_dir / runs.METRICS):
        e = r.get("elapsed_s")
        if not isinstance(e, (int, float)):
            continue
        if e < last:
            total += last
        last = e
    return round(total + last, 1)


def seed_from_warmup(trial: Trial, baseline: Path) -> None:
    """Make `trial.folder` a run folder whose first stage is the baseline's finished warm-up: its adapter linked,
    its stage recipe and metrics copied, reused.json saying where it came from, the summary marking it finished.
    recipe.yaml (what makes the folder a run folder) is written last: a preparation cut short is redone."""
    sft = trial.recipe.pipeline()[0]
    name = f"1-{sft.kind}"
    src, dst = baseline / runs.STAGES / name, trial.folder / runs.STAGES / name
    before = next((s for s in runs.read_summary(baseline).get("stages", []) if s.get("name") == name), None)
    if before is None or before.get("status") != "finished" or not (src / runs.ADAPTER).is_dir():
        raise KitError(f"{baseline}: its warm-up ({name}) has not finished; run the study again to resume it")
    if dst.exists():
        shutil.rmtree(dst)
    for f in sorted((src / runs.ADAPTER).rglob("*")):
        if f.is_file():
            _link_or_copy(f, dst / runs.ADAPTER / f.relative_to(src / runs.ADAPTER))
    for f in (runs.RECIPE, runs.METRICS):
        if (src / f).is_file():
            shutil.copy2(src / f, dst / f)
    seconds = stage_seconds(src)
    (dst / REUSED).write_text(json.dumps({
        "from": os.path.relpath(src, dst), "stage": name, "steps": before.get("steps"), "seconds": seconds,
        "note": "this warm-up was trained once, in the run named in `from`, and copied here (adapter hard-linked); "
                "this run trained the stages after it"}, indent=2))
    records = [r for r in metrics.read_jsonl(baseline / runs.METRICS) if r.get("stage") == name]
    metrics.rewrite_jsonl(trial.folder / runs.METRICS, records)
    stages = [{"name": f"{i + 1}-{s.kind}", "kind": s.kind, "status": "pending", "steps": 0,
               "max_steps": trial.recipe.stage_steps(s)} for i, s in enumerate(trial.recipe.pipeline())]
    stages[0].update(status="finished", steps=before.get("steps", 0))
    runs.write_summary(trial.folder, {
        "status": "stopped", "phase": "warm-up copied", "run": str(trial.folder.resolve()),
        "recipe": trial.recipe.run.name, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": 0.0,
        "run_step": stages[0]["steps"], "stages": stages,
        "message": f"warm-up {name} reused from {baseline.name}; the study continues it"})
    keep_reward_files(trial.recipe, trial.folder)  # writes recipe.yaml


def train_trial(trial: Trial, baseline: Trial, recipe_path: str | Path) -> None:
    """Train (or resume) one trial into its run folder."""
    folder = trial.folder
    if (folder / runs.RECIPE).is_file():
        train(resume=folder)
    elif trial.shares_warmup:
        seed_from_warmup(trial, baseline.folder)
        train(resume=folder)
    else:
        train(recipe_path, trial.overrides, run_dir=folder)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation: the baseline's questions and settings for every trial of its seed


def _final_kl(run: Path) -> float | None:
    kls = [r["kl"] for r in metrics.read_jsonl(run / runs.METRICS)
           if str(r.get("stage", "")).endswith("-grpo") and isinstance(r.get("kl"), (int, float))]
    return kls[-1] if kls else None


def _metric_names(samples: int | None) -> dict[str, str]:
    names = dict(METRIC_NAMES)
    if samples:
        names.update({"pass@1": "pass@1", f"pass@{samples}": f"pass@{samples}", f"maj@{samples}": f"maj@{samples}"})
    return names


def evaluate_trial(trial: Trial, baseline: Trial, limit: int | None, samples: int | None
                   ) -> tuple[dict, dict, dict, bool]:
    """(metrics, vs_baseline, eval description, whether anything was generated) of one finished trial."""
    sides = [Side(str(baseline.folder))] + ([] if trial.is_baseline else [Side(str(trial.folder))])
    measure = sides[0].recipe  # the baseline's questions, prompt and budget for every trial of its seed
    split, rows = _rows(measure, None, limit)
    settings = _settings(measure, types.SimpleNamespace(samples=samples, temperature=None))
    cached = all(_saved(s.folder, _name(s.kind, split, settings), rows, s.id, settings) is not None for s in sides)
    results = _evaluate_sides(sides, split, rows, measure, settings)
    names = _metric_names(samples)
    summary = results[-1][0]
    found = {short: summary[key] for key, short in names.items() if key in summary}
    versus = {}
    if not trial.is_baseline:
        diff = comparison(results[0], results[1])["diff"]
        versus = {names[k]: {"diff": d["value"], "low": d["low"], "high": d["high"]}
                  for k, d in diff.items() if k in names}
    described = {"split": split, "n": len(rows), "source": measure.data.source, "samples": samples or 0,
                 "max_new_tokens": settings["max_new_tokens"]}
    return found, versus, described, not cached


# ---------------------------------------------------------------------------------------------------------------
# The study


def _entry(trial: Trial, out: Path) -> dict:
    return {"name": trial.name, "changes": trial.changes, "seed": trial.seed, "run": os.path.relpath(trial.folder, out),
            "status": "pending", "metrics": None, "vs_baseline": None, "train_s": None, "kl": None,
            "warmup": "own" if not trial.shares_warmup else None, "warmup_s": None}


def write_study(out: Path, study: dict, plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    study["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = out / (STUDY_JSON + ".tmp")
    tmp.write_text(json.dumps(study, indent=2, ensure_ascii=False))
    os.replace(tmp, out / STUDY_JSON)
    (out / STUDY_MD).write_text(study_markdown(study))
    if plot and any(t.get("vs_baseline") for t in study["trials"]):
        plot_study(study, out / STUDY_PNG)


def run_study(recipe_path: str | Path, vary: list[str], sets: list[str] = (), seeds: int = 1,
              limit: int | None = None, samples: int | None = None, out: str | Path | None = None,
              grid: bool = False) -> Path:
    """Run (or continue) a study; returns its folder. See the module's docstring."""
    args = study_args(recipe_path, vary, sets, seeds, limit, samples, grid)
    out, trials, notes = plan_study(recipe_path, vary, sets, seeds, grid, out)
    previous = check_folder(out, args, trials)
    preflight(trials)
    for note in notes:
        say(f"study: {note}")
    entries = [_entry(t, out) for t in trials]
    if previous:  # results already there (a trial reused below gets them again from its cache)
        old = {e.get("run"): e for e in previous.get("trials", [])}
        for e in entries:
            if e["run"] in old:
                e.update({k: v for k, v in old[e["run"]].items() if k in e and k not in ("name", "changes", "seed")})
    study = {"recipe": str(recipe_path), "args": args, "created": (previous or {}).get(
        "created", time.strftime("%Y-%m-%d %H:%M:%S")), "eval": (previous or {}).get("eval"), "trials": entries}
    write_study(out, study, plot=False)
    shared = sum(t.shares_warmup for t in trials)
    say(f"study: {len(trials)} trials ({seeds} seed{'s' if seeds > 1 else ''}) in {out}"
        + (f"; {shared} start from their baseline's warm-up" if shared else ""))
    baselines = {t.seed_index: t for t in trials if t.is_baseline}
    failed = []
    for n, (trial, entry) in enumerate(zip(trials, entries), 1):
        baseline = baselines[trial.seed_index]
        label = f"trial {n}/{len(trials)} {trial.name} seed {trial.seed_index}"
        state = runs.status(trial.folder) if (trial.folder / runs.RECIPE).is_file() else None
        if state == "finished":
            say(f"study: {label}: reused")
        else:
            say(f"study: {label}: " + ("resuming" if state else "training")
                + (f" (from the warm-up of {baseline.folder.name})" if trial.shares_warmup and not state else ""))
            try:
                train_trial(trial, baseline, recipe_path)
            except KitError as e:
                entry.update(status="failed", error=str(e))
                write_study(out, study)
                if trial.is_baseline:
                    raise KitError(f"study: the baseline of seed {trial.seed} failed: {e}; fix it and run the same "
                                   "command again (finished trials are kept)") from None
                say(f"study: {label}: failed: {e}")
                failed.append(trial.name)
                continue
            state = runs.status(trial.folder)
            if state != "finished":
                entry["status"] = state
                write_study(out, study)
                raise KitError(f"study: {label} {state}; run the same command again to continue it")
        summary = runs.read_summary(trial.folder)
        reused = trial.folder / runs.STAGES / f"1-{trial.recipe.pipeline()[0].kind}" / REUSED
        warm = json.loads(reused.read_text()) if reused.is_file() else None
        found, versus, described, generated = evaluate_trial(trial, baseline, limit, samples)
        if generated:
            say(f"study: {label}: evaluated on {described['n']} {described['split']} questions")
        entry.update(status="finished", metrics=found, vs_baseline=versus,
                     train_s=round(summary.get("elapsed_s", 0.0) + (warm["seconds"] if warm else 0.0), 1),
                     kl=_final_kl(trial.folder) if trial.recipe.grpo.beta > 0 else None,
                     warmup=os.path.relpath(baseline.folder, out) if warm else "own",
                     warmup_s=warm["seconds"] if warm else None)
        entry.pop("error", None)
        study["eval"] = described
        write_study(out, study)
    say(f"study: done: {out / STUDY_MD}")
    if failed:
        raise KitError(f"study: {len(failed)} trial{'s' if len(failed) > 1 else ''} failed ({', '.join(failed)}); "
                       f"{out / STUDY_JSON} says why; run the same command again to resume them")
    return out


# ---------------------------------------------------------------------------------------------------------------
# The table and the plot


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _diff(d) -> str:
    if not d:
        return "-"
    return f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def command_line(study: dict) -> str:
    a = study["args"]
    parts = ["kit study", a["recipe"], *(f"--vary {v}" for v in a["vary"])]
    parts += [f"--set {s}" for s in a["set"]]
    parts += [f"--seeds {a['seeds']}"] if a.get("seeds", 1) != 1 else []
    parts += [f"--{k} {a[k]}" for k in ("limit", "samples") if a.get(k) is not None]
    return " ".join(parts + (["--grid"] if a.get("grid") else []))


def seed_spread(values: list[float]) -> str:
    """min..max and std of a configuration's strict accuracy over seeds, in percent / points."""
    if not values:
        return "-"
    text = f"{100 * min(values):.1f}..{100 * max(values):.1f}%"
    if len(values) > 1:
        text += f" (std {100 * statistics.stdev(values):.1f})"
    return text


def study_markdown(study: dict) -> str:
    """study.md: what was run, one row per trial, and (with seeds) the spread across seeds."""
    trials, k = study["trials"], study["args"].get("samples")
    ev = study.get("eval") or {}
    lines = [f"# Study: {study['recipe']}", "", f"`{command_line(study)}`", ""]
    if ev:
        lines.append(f"Every trial and its seed's baseline answered the same {ev['n']} {ev['split']} questions of "
                     f"{ev['source']} (greedy, {ev['max_new_tokens']} new tokens"
                     + (f"; {k} samples each for pass@k / maj@k" if k else "") + "). Differences are trial minus "
                     "baseline in accuracy points, with the paired 95% interval.")
    else:
        lines.append("Nothing evaluated yet.")
    header = ["trial", "seed", "status", "strict", "lenient", "format"]
    extra = ["pass@1", f"pass@{k}", f"maj@{k}"] if k else []
    header += extra + ["Δ strict [95%]", "Δ lenient [95%]", "Δ format [95%]"]
    header += [f"Δ pass@{k} [95%]"] if k else []
    header += ["train s", "final KL", "changes"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in trials:
        m, v = t.get("metrics") or {}, t.get("vs_baseline") or {}
        name = t["name"] + (" *" if t.get("warmup") not in ("own", None) else "")
        row = [name, str(t["seed"]), t.get("status", "?"), _pct(m.get("strict")), _pct(m.get("lenient")),
               _pct(m.get("format"))]
        row += [_pct(m.get(x)) for x in extra]
        row += [_diff(v.get("strict")), _diff(v.get("lenient")), _diff(v.get("format"))]
        row += [_diff(v.get(f"pass@{k}"))] if k else []
        row += ["-" if t.get("train_s") is None else f"{t['train_s']:.0f}",
                "-" if t.get("kl") is None else f"{t['kl']:.4g}",
                ", ".join(f"{f}={_value(x)}" for f, x in t["changes"].items()) or "-"]
        lines.append("| " + " | ".join(row) + " |")
    if any(t.get("warmup") not in ("own", None) for t in trials):
        lines += ["", ("\\* started from its seed's baseline warm-up (the SFT stage, trained once and copied); its "
                       "train s counts that warm-up's seconds too, so times compare like with like.")]
    seeds = sorted({t["seed"] for t in trials})
    if len(seeds) > 1:
        lines += ["", "## Across seeds", "",
                  ("| configuration | seeds done | strict: min..max (std) | mean Δ strict | Δ strict per seed | "
                   "intervals above / below 0 |"), "|---|---|---|---|---|---|"]
        for name in dict.fromkeys(t["name"] for t in trials):
            done = [t for t in trials if t["name"] == name and t.get("metrics")]
            strict = [t["metrics"]["strict"] for t in done if t["metrics"].get("strict") is not None]
            diffs = [t["vs_baseline"]["strict"] for t in done if (t.get("vs_baseline") or {}).get("strict")]
            mean = f"{100 * statistics.fmean(d['diff'] for d in diffs):+.1f}" if diffs else "-"
            per_seed = ", ".join(f"{100 * d['diff']:+.1f}" for d in diffs) or "-"
            sign = f"{sum(d['low'] > 0 for d in diffs)} / {sum(d['high'] < 0 for d in diffs)}" if diffs else "-"
            lines.append(f"| {name} | {len(done)}/{len(seeds)} | {seed_spread(strict)} | {mean} | {per_seed} | "
                         f"{sign} |")
        base = [t["metrics"]["strict"] for t in trials if t["name"] == "baseline" and t.get("metrics")]
        if len(base) > 1:
            spread = 100 * (max(base) - min(base))
            lines += ["", (f"The baseline alone, seed to seed, moves strict accuracy by {spread:.1f} points (std "
                           f"{100 * statistics.stdev(base):.1f}): a configuration's difference smaller than that, or "
                           "not of the same sign on every seed, is within what a rerun with another seed does.")]
    else:
        lines += ["", ("One seed: each interval covers the choice of questions, not the training's own "
                       "randomness; `--seeds 2` or more shows how far a rerun moves the baseline.")]
    return "\n".join(lines) + "\n"


def plot_study(study: dict, path: Path) -> Path:
    """study.png: every trial's strict accuracy minus its seed's baseline, with the 95% interval as error bars;
    with several seeds, the baseline's seed-to-seed range shaded around 0."""
    from matplotlib.figure import Figure

    trials = [t for t in study["trials"] if (t.get("vs_baseline") or {}).get("strict")]
    names = list(dict.fromkeys(t["name"] for t in trials))
    seeds = sorted({t["seed"] for t in study["trials"]})
    fig = Figure(figsize=(7.5, 1.4 + 0.42 * len(names)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    base = [t["metrics"]["strict"] for t in study["trials"] if t["name"] == "baseline" and t.get("metrics")]
    if len(base) > 1:
        spread = 100 * (max(base) - min(base))
        ax.axvspan(-spread, spread, color="0.88", label="baseline: seed-to-seed range", zorder=0)
    ax.axvline(0, color="0.3", linewidth=1)
    width = 0.6 / max(len(seeds), 1)
    labelled = set()
    for t in trials:
        d = t["vs_baseline"]["strict"]
        i = seeds.index(t["seed"])
        y = names.index(t["name"]) + (i - (len(seeds) - 1) / 2) * width
        x = 100 * d["diff"]
        ax.errorbar([x], [y], xerr=[[x - 100 * d["low"]], [100 * d["high"] - x]], fmt="o", color=f"C{i}",
                    capsize=3, markersize=5, label=None if i in labelled else f"seed {t['seed']}")
        labelled.add(i)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel("strict accuracy minus the baseline's (points), 95% paired interval", fontsize=8)
    ax.set_title(f"Study: {Path(study['recipe']).stem}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7.5, loc="best", framealpha=0.7)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------------------------------------------


def cli(args) -> int:
    out = run_study(args.recipe, args.vary, args.overrides, args.seeds, args.limit, args.samples, args.out, args.grid)
    print(out / STUDY_MD)
    return 0
