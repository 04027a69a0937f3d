"""GSM8K accuracy, measured the same way before and after training.

strict: the number in the first <answer> block is right (what correctness_reward pays for).
lenient: the last number anywhere in the answer is right (credits a right answer in the wrong layout).
format: the strict <reasoning>/<answer> layout (format_reward). Greedy decoding, the recipe's system prompt.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kit.data import answers_match, extract_answer, to_prompt
from kit.rewards import format_reward


def score_answers(rows: list[dict], completions: list[str], tokenizer=None) -> tuple[dict, list[dict]]:
    """Per-item results and their summary for completions answering `rows` (question/answer dicts)."""
    items = []
    for row, text in zip(rows, completions, strict=True):
        strict, lenient = extract_answer(text), extract_answer(text, lenient=True)
        items.append({
            "question": row["question"], "gold": row["answer"], "completion": text,
            "pred_strict": strict, "pred_lenient": lenient,
            "correct_strict": answers_match(strict, row["answer"]),
            "correct_lenient": answers_match(lenient, row["answer"]),
            "format": format_reward([text])[0] == 1.0,
            "length": len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer else len(text),
        })
    n = len(items)
    mean = (lambda key: sum(float(i[key]) for i in items) / n) if n else (lambda key: 0.0)
    summary = {"n": n, "accuracy_strict": mean("correct_strict"), "accuracy_lenient": mean("correct_lenient"),
               "format_rate": mean("format"), "mean_length": mean("length"),
               "length_unit": "tokens" if tokenizer else "characters"}
    return summary, items


def evaluate(generator, rows: list[dict], system_prompt: str, max_new_tokens: int, batch_size: int = 16,
             progress: bool = True, desc: str = "eval") -> tuple[dict, list[dict]]:
    """Greedy answers to `rows`, scored."""
    prompts = [to_prompt(r["question"], system_prompt) for r in rows]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc=desc, unit="q")
    try:
        outs = generator.generate(prompts, max_new_tokens, temperature=0.0, batch_size=batch_size,
                                  on_batch=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    return score_answers(rows, [o[0] for o in outs], generator.tokenizer)


def difference_interval(base: list[bool], trained: list[bool]) -> tuple[float, float, float]:
    """Difference in accuracy (trained - base) on the same items, with a 95% interval from the paired
    differences (normal approximation)."""
    if len(base) != len(trained) or not base:
        raise ValueError("paired comparison needs the same, non-empty item list")
    d = [float(t) - float(b) for b, t in zip(base, trained)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def write_results(folder: Path, name: str, summary: dict, items: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=2))
    with open(folder / f"{name}.jsonl", "w") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# kit eval / kit compare


def _target(path: str, overrides: list[str] = ()):
    """(recipe, run folder or None) for a recipe file or a run folder."""
    from kit import runs
    from kit.recipe import KitError, load_recipe

    p = Path(path)
    if p.is_dir():
        run = runs.open_run(p)
        return load_recipe(run / runs.RECIPE, overrides), run
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return load_recipe(p, overrides), None
    raise KitError(f"{path}: neither a recipe file nor a run folder")


def _rows(recipe, split: str | None, limit: int | None) -> tuple[str, list[dict]]:
    from kit import data

    split = split or recipe.eval.split
    limit = limit or recipe.eval.limit
    # The first N of the split, unshuffled: the same items before and after training, run after run.
    return split, data.questions(recipe.data.source, split, limit, shuffle=False, subset=recipe.data.subset)


def _generator(recipe, adapter):
    from kit import data
    from kit.generation import Generator
    from kit.model import load_for_inference

    model, tokenizer, lora_request = load_for_inference(recipe, adapter)
    return Generator(model, tokenizer, lora_request, data.template_kwargs(recipe.data))


def run_eval(recipe, generator, split: str, rows: list[dict], label: str) -> tuple[dict, list[dict]]:
    import time

    t0 = time.time()
    summary, items = evaluate(generator, rows, recipe.data.system_prompt,
                              recipe.eval.max_new_tokens or recipe.grpo.max_completion_length,
                              recipe.eval.batch_size, desc=f"eval {label}")
    summary.update(split=split, source=recipe.data.source, model=recipe.model.name, label=label,
                   seconds=round(time.time() - t0, 1), date=time.strftime("%Y-%m-%d %H:%M:%S"))
    return summary, items


def _eval_folder(recipe, run) -> Path:
    if run is not None:
        return run / "eval"
    return Path(recipe.run.output_dir) / "_eval" / recipe.run.name


def _print_summary(name: str, s: dict, folder: Path) -> None:
    print(f"{name}: strict {s['accuracy_strict']:.1%}  lenient {s['accuracy_lenient']:.1%}  format "
          f"{s['format_rate']:.1%}  mean length {s['mean_length']:.0f} {s['length_unit']}  (n={s['n']}, "
          f"{s['split']}, {s['seconds']:.0f} s) -> {folder / (name + '.json')}")


def cli(args) -> int:
    if args.command == "compare":
        return compare_cli(args)
    from kit import runs
    from kit.recipe import KitError

    recipe, run = _target(args.target, args.overrides)
    if args.base and run is None:
        raise KitError("--base is for run folders (a recipe file is evaluated on its base model anyway)")
    adapter = None
    if run is not None and not args.base:
        adapter = runs.latest_adapter(run)
        if adapter is None:
            raise KitError(f"{run} has no adapter yet; evaluate its base model with --base, or wait for a stage "
                           "to finish")
    split, rows = _rows(recipe, args.split, args.limit)
    name = f"{'trained' if adapter else 'base'}-{split}"
    summary, items = run_eval(recipe, _generator(recipe, adapter), split, rows, name)
    summary["adapter"] = adapter_id(adapter)
    folder = _eval_folder(recipe, run)
    write_results(folder, name, summary, items)
    _print_summary(name, summary, folder)
    return 0


def adapter_id(adapter: Path | None) -> str | None:
    """Which adapter weights an evaluation used (path and modification time): a saved result is reused only for
    the same weights, so a run trained further is evaluated afresh."""
    if adapter is None:
        return None
    weights = Path(adapter) / "adapter_model.safetensors"
    return f"{adapter}@{weights.stat().st_mtime_ns if weights.is_file() else 0}"


def _saved(folder: Path, name: str, rows: list[dict], adapter: str | None) -> tuple[dict, list[dict]] | None:
    """A saved evaluation of exactly these items by this adapter, or None."""
    from kit.metrics import read_jsonl

    if not (folder / f"{name}.json").is_file():
        return None
    summary = json.loads((folder / f"{name}.json").read_text())
    items = read_jsonl(folder / f"{name}.jsonl")
    if [i["question"] for i in items] != [r["question"] for r in rows] or summary.get("adapter") != adapter:
        return None
    return summary, items


def compare_cli(args) -> int:
    from kit import runs
    from kit.recipe import KitError, load_recipe

    run = runs.open_run(args.run)
    recipe = load_recipe(run / runs.RECIPE)
    adapter = runs.latest_adapter(run)
    if adapter is None:
        raise KitError(f"{run} has no adapter yet; nothing trained to compare")
    split, rows = _rows(recipe, args.split, args.limit)
    folder = run / "eval"
    used = {"base": None, "trained": adapter_id(adapter)}
    results = {name: _saved(folder, f"{name}-{split}", rows, used[name]) for name in ("base", "trained")}
    if None in results.values():  # one model in memory: the base answers come with the adapter switched off
        gen = _generator(recipe, adapter)
        for name in ("base", "trained"):
            if results[name] is None:
                with gen.use_adapter(name == "trained"):
                    results[name] = run_eval(recipe, gen, split, rows, f"{name}-{split}")
                results[name][0]["adapter"] = used[name]
                write_results(folder, f"{name}-{split}", *results[name])
    table = comparison(results["base"][1], results["trained"][1])
    (folder / f"compare-{split}.json").write_text(json.dumps(table, indent=2))
    print(f"{run.name}: base vs trained on the first {len(rows)} {split} questions of {recipe.data.source}\n")
    print(f"{'metric':<10} {'base':>7} {'trained':>8} {'diff':>7}   95% interval of the difference")
    for key, row in table["metrics"].items():
        print(f"{key:<10} {row['base']:>7.1%} {row['trained']:>8.1%} {row['diff']:>+7.1%}   "
              f"[{row['low']:+.1%}, {row['high']:+.1%}]")
    print(f"\nn = {table['n']} paired items; saved to {folder}/compare-{split}.json")
    return 0


def comparison(base_items: list[dict], trained_items: list[dict]) -> dict:
    """Paired base vs trained table: strict, lenient, format, each with its 95% interval of the difference."""
    by_q = {i["question"]: i for i in base_items}
    pairs = [(by_q[t["question"]], t) for t in trained_items if t["question"] in by_q]
    out = {"n": len(pairs), "metrics": {}}
    for key, field in (("strict", "correct_strict"), ("lenient", "correct_lenient"), ("format", "format")):
        b = [bool(p[0][field]) for p in pairs]
        t = [bool(p[1][field]) for p in pairs]
        diff, low, high = difference_interval(b, t)
        out["metrics"][key] = {"base": sum(b) / len(b), "trained": sum(t) / len(t), "diff": diff, "low": low,
                               "high": high}
    return out
