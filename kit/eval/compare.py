"""`kit compare A [B]`: B - A on the same held-out items, with paired 95% intervals and the gain split; one model
in memory where both sides share a base model (the second adapter's weights are loaded into it)."""

from __future__ import annotations

import json

from kit.errors import KitError
from kit.eval.evaluate import (
    Side,
    _generator,
    _name,
    _rows,
    _saved,
    _settings,
    run_eval,
    write_results,
)
from kit.eval.scoring import comparison, format_comparison


def _same_base(a, b) -> bool:
    """Both sides load the same base model the same way, and their adapters (if any) have the same shape: then one
    model in memory serves both (the second adapter's weights are loaded into it)."""
    from dataclasses import asdict

    if asdict(a.recipe.model) != asdict(b.recipe.model):
        return False
    formats = [{k: side.trained.get(k) for k in ("load_in_4bit", "dtype")} for side in (a, b)]
    if formats[0] != formats[1]:  # trained in another weight format (nf4 / full precision): each loads its own
        return False
    configs = []
    for side in (a, b):
        if side.adapter is not None:
            c = json.loads((side.adapter / "adapter_config.json").read_text())
            configs.append({k: c.get(k) for k in ("r", "lora_alpha", "target_modules", "modules_to_save",
                                                  "base_model_name_or_path")})
    return len(configs) < 2 or configs[0] == configs[1]


def _evaluate_sides(sides, split, rows, recipe, settings) -> list[tuple[dict, list[dict]]]:
    """Each side's results on `rows`, reused when saved for the same weights and settings, else generated with one
    model in memory where the sides share a base model."""
    results = [_saved(s.folder, _name(s.kind, split, settings), rows, s.id, settings) for s in sides]
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    shared = len(sides) == 2 and _same_base(*sides)
    gen, holds = None, None
    for i in todo:
        side = sides[i]
        if gen is None or not shared:
            gen = None  # not shared: the previous model is dropped before the next loads
            first = side.adapter or next((s.adapter for s in sides if s.adapter is not None), None) if shared \
                else side.adapter
            gen, holds = _generator(side.recipe, first, side.trained), first
        if side.adapter is not None and side.adapter != holds:
            gen.engine.load_adapter(side.adapter)
            holds = side.adapter
        name = _name(side.kind, split, settings)
        with gen.use_adapter(side.adapter is not None):
            results[i] = run_eval(recipe, gen, split, rows, name, settings)
        results[i][0]["adapter"] = side.id
        write_results(side.folder, name, *results[i])
    return results


def compare_cli(args) -> int:
    """`kit compare A [B]`: B - A on the same items (one argument: A's base model vs A)."""
    if args.b is None:
        a, b = Side(args.a, base=True), Side(args.a)
        if b.adapter is None:
            raise KitError(f"{args.a}: a recipe has no trained side; compare a run or stage folder, or two targets")
    else:
        a, b = Side(args.a), Side(args.b)
    recipe = b.recipe  # the items, prompt and budget both sides answer
    split, rows = _rows(recipe, args.split, args.limit)
    settings = _settings(recipe, args)
    res_a, res_b = _evaluate_sides([a, b], split, rows, recipe, settings)
    table = comparison(res_a, res_b)
    table.update(split=split, source=recipe.data.source, a_label=a.label, b_label=b.label)
    name = f"compare-{split}" if args.b is None else f"compare-{_slug(a.label)}-{split}"
    if settings["samples"]:
        name += f"-k{settings['samples']}"
    b.folder.mkdir(parents=True, exist_ok=True)
    (b.folder / f"{name}.json").write_text(json.dumps(table, indent=2))
    if args.json:
        print(json.dumps(table), file=args.result_out)
        return 0
    print(f"A = {a.label}\nB = {b.label}\nthe first {len(rows)} {split} questions of {recipe.data.source}\n")
    print(format_comparison(table))
    print(f"\nn = {table['n']} paired items; saved to {b.folder / (name + '.json')}")
    return 0


def _slug(label: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.]+", "-", label.removesuffix(" (base model)")).strip("-")
