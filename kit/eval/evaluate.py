"""`kit eval`: GSM8K accuracy of a model, measured the same way before and after training (the numbers are
computed in kit/eval/scoring.py).

What strict, lenient, format, pass@k and maj@k mean: kit/eval/scoring.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kit import runs
from kit.errors import KitError
from kit.eval.scoring import score_answers, score_samples
from kit.models.engines import Generator
from kit.models.loading import load_for_inference
from kit.models.plan import plan as plan_for
from kit.recipe import load_recipe
from kit.runs.metrics import read_jsonl
from kit.task import data
from kit.task.data import to_prompt


def evaluate(generator, rows: list[dict], system_prompt: str, max_new_tokens: int, batch_size: int = 16,
             progress: bool = True, desc: str = "eval", samples: int = 0, temperature: float = 1.0,
             top_p: float = 1.0, seed: int = 0) -> tuple[dict, list[dict]]:
    """Greedy answers to `rows`, scored; with `samples` = K >= 1 also K sampled answers per question (temperature,
    top_p; seeded with `seed`) and their pass@k / maj@K, each item then holding its samples."""
    prompts = [to_prompt(r["question"], system_prompt) for r in rows]
    outs = _generate(generator, prompts, max_new_tokens, dict(temperature=0.0, batch_size=batch_size),
                     desc if progress else None)
    summary, items = score_answers(rows, [o[0] for o in outs], generator.tokenizer)
    if samples:
        if temperature <= 0:
            raise ValueError("sampling K answers needs a temperature > 0")
        import torch

        # HF sampling draws from torch's generator: seeded, the same samples run after run; forked, so an
        # evaluation during training leaves the trainer's random stream as it was. vLLM takes the seed itself.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            drawn = _generate(generator, prompts, max_new_tokens,
                              dict(temperature=temperature, top_p=top_p, n=samples, seed=seed,
                                   batch_size=max(1, batch_size // samples)),
                              f"{desc} x{samples} samples" if progress else None)
        extra, per_row = score_samples(rows, drawn)
        summary.update(extra, temperature=temperature, top_p=top_p)
        for item, row in zip(items, per_row):
            item.update(row)
    return summary, items


def _generate(generator, prompts, max_new_tokens, kwargs, desc):
    bar = None
    if desc:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc=desc, unit="q", file=sys.stderr)
    try:
        return generator.generate(prompts, max_new_tokens, on_batch=bar.update if bar else None, **kwargs)
    finally:
        if bar:
            bar.close()


def write_results(folder: Path, name: str, summary: dict, items: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=2))
    with open(folder / f"{name}.jsonl", "w") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# kit eval


def _log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)  # stdout carries only the result (one JSON object with --json)


def _target(path: str, overrides: list[str] = ()):
    """(recipe, run folder or None) for a recipe file or a run folder."""
    p = Path(path)
    if p.is_dir():
        run = runs.open_run(p)
        return load_recipe(run / runs.RECIPE, overrides), run
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return load_recipe(p, overrides), None
    raise KitError(f"{path}: neither a recipe file nor a run folder")


class Side:
    """One side of an evaluation: a recipe's base model (adapter None), a run's final adapter, or one stage's."""

    def __init__(self, path: str, overrides: list[str] = (), base: bool = False):
        p = Path(path)
        stage = p.is_dir() and p.parent.name == runs.STAGES and (p / runs.RECIPE).is_file()
        if stage:  # runs/X/stages/1-sft: that stage's resolved recipe and adapter
            self.recipe, self.folder = load_recipe(p / runs.RECIPE, overrides), p / runs.EVAL
            self.adapter = None if base else p / runs.ADAPTER
            if self.adapter is not None and not (self.adapter / "adapter_config.json").is_file():
                raise KitError(f"{p} has no adapter yet (the stage has not finished); pick a finished stage or "
                               "the run folder")
            self.label = f"{p.parent.parent.name}/{p.name}"
            self.trained = runs.trained_plan(p)
        else:
            self.recipe, run = _target(path, overrides)
            self.folder = run / runs.EVAL if run is not None else _eval_folder(self.recipe, None)
            self.adapter = runs.latest_adapter(run) if run is not None and not base else None
            if run is not None and not base and self.adapter is None:
                raise KitError(f"{run} has no adapter yet; evaluate its base model with --base, or wait for a "
                               "stage to finish")
            self.label = run.name if run is not None else Path(path).stem
            self.trained = runs.trained_plan(run) if run is not None else {}  # a recipe: as it says
        if self.adapter is None:
            self.label += " (base model)"
        self.kind = "trained" if self.adapter is not None else "base"

    @property
    def id(self) -> str | None:
        return adapter_id(self.adapter)


def _rows(recipe, split: str | None, limit: int | None) -> tuple[str, list[dict]]:
    split = split or recipe.eval.split
    limit = limit or recipe.eval.limit
    # The first N of the split, unshuffled: the same items before and after training, run after run.
    return split, data.questions(recipe.data, split, limit, shuffle=False)


def _generator(recipe, adapter, trained: dict | None = None):
    """A Generator for the recipe's model with `adapter`, its weights loaded as the run trained them (`trained`:
    kit.runs.trained_plan), not as the recipe would load them here today."""
    plan = plan_for(recipe, trained=trained)
    for note in plan.notes:
        if note.startswith("model.load_in_4bit"):  # the weights' format: what the numbers are of
            _log(f"[kit] {note}")
    _, _, engine = load_for_inference(recipe, adapter, plan)
    gen = Generator(engine, data.template_kwargs(recipe.data))
    _log(f"[kit] eval: {plan.weights} weights; answers from {gen.engine_name}")
    return gen


def _settings(recipe, args) -> dict:
    """What an evaluation's numbers depend on besides the model and the items (a saved result is reused only when
    they match)."""
    samples = getattr(args, "samples", None) or 0  # eval.samples is for evaluation during training
    temperature = getattr(args, "temperature", None)
    return {"samples": samples,
            "temperature": (recipe.eval.temperature if temperature is None else temperature) if samples else None,
            "max_new_tokens": recipe.eval.max_new_tokens or recipe.grpo.max_completion_length,
            "system_prompt": recipe.data.system_prompt}


def run_eval(recipe, generator, split: str, rows: list[dict], label: str, settings: dict | None = None
             ) -> tuple[dict, list[dict]]:
    import time

    settings = settings or _settings(recipe, None)
    t0 = time.time()
    summary, items = evaluate(generator, rows, settings["system_prompt"], settings["max_new_tokens"],
                              recipe.eval.batch_size, desc=f"eval {label}", samples=settings["samples"],
                              temperature=settings["temperature"] or 1.0, seed=recipe.grpo.seed)
    summary.update(split=split, source=recipe.data.source, model=recipe.model.name, label=label,
                   seconds=round(time.time() - t0, 1), date=time.strftime("%Y-%m-%d %H:%M:%S"),
                   settings=settings)
    return summary, items


def _eval_folder(recipe, run) -> Path:
    if run is not None:
        return run / "eval"
    return Path(recipe.run.output_dir) / "_eval" / recipe.run.name


def _name(kind: str, split: str, settings: dict) -> str:
    return f"{kind}-{split}" + (f"-k{settings['samples']}" if settings["samples"] else "")


def _summary_line(name: str, s: dict) -> str:
    line = (f"{name}: strict {s['accuracy_strict']:.1%}  lenient {s['accuracy_lenient']:.1%}  format "
            f"{s['format_rate']:.1%}  mean length {s['mean_length']:.0f} {s['length_unit']}")
    k = s.get("samples")
    if k:
        line += (f"\n  {k} samples at T={s['temperature']:g}: pass@1 {s['pass@1']:.1%}  pass@{k} {s[f'pass@{k}']:.1%}"
                 f"  maj@{k} {s[f'maj@{k}']:.1%}  (lenient: {s['pass@1_lenient']:.1%} / "
                 f"{s[f'pass@{k}_lenient']:.1%} / {s[f'maj@{k}_lenient']:.1%})")
    return line


def eval_cli(args) -> int:
    side = Side(args.target, args.overrides, base=args.base)
    split, rows = _rows(side.recipe, args.split, args.limit)
    settings = _settings(side.recipe, args)
    name = _name(side.kind, split, settings)
    summary, items = run_eval(side.recipe, _generator(side.recipe, side.adapter, side.trained), split, rows, name,
                              settings)
    summary["adapter"] = side.id
    write_results(side.folder, name, summary, items)
    if args.json:
        print(json.dumps(summary), file=args.result_out)
    else:
        print(_summary_line(name, summary) + f"\n  (n={summary['n']}, {split}, {summary['seconds']:.0f} s) -> "
              f"{side.folder / (name + '.json')}")
    return 0


def adapter_id(adapter: Path | None) -> str | None:
    """Which adapter weights an evaluation used (path and modification time): a saved result is reused only for
    the same weights, so a run trained further is evaluated afresh."""
    if adapter is None:
        return None
    weights = Path(adapter) / "adapter_model.safetensors"
    return f"{Path(adapter).resolve()}@{weights.stat().st_mtime_ns if weights.is_file() else 0}"


def _saved(folder: Path, name: str, rows: list[dict], adapter: str | None, settings: dict
           ) -> tuple[dict, list[dict]] | None:
    """A saved evaluation of exactly these items by this adapter with these settings, or None."""
    if not (folder / f"{name}.json").is_file():
        return None
    summary = json.loads((folder / f"{name}.json").read_text())
    items = read_jsonl(folder / f"{name}.jsonl")
    if ([i["question"] for i in items] != [r["question"] for r in rows] or summary.get("adapter") != adapter
            or summary.get("settings") != settings):
        return None
    return summary, items
