"""Recipes: a YAML file that maps 1:1 onto the frozen dataclasses of kit/recipe/schema.py (defaults and help texts
live there). Here: reading, overrides, validation and saving; every mistake is a `RecipeError` that names the
field, the bad value and what is allowed — raised before any model is loaded.

    >>> r = load_recipe("recipes/demo.yaml", ["grpo.max_steps=5"])
    >>> r.grpo.max_steps
    5

This module imports no torch: the app and the CLI validate recipes without paying for it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from kit.errors import KitError, RecipeError  # noqa: F401  (KitError also importable from here, as older code does)
from kit.recipe.schema import (  # noqa: F401  (the recipe's names, importable from here)
    ALGORITHM_FIELDS,
    ALGORITHMS,
    DEFAULT_REWARDS,
    DEFAULT_SYSTEM_PROMPT,
    SECTIONS,
    Algorithm,
    DataSpec,
    EvalSpec,
    GRPOSpec,
    ModelSpec,
    Recipe,
    RewardSpec,
    RunSpec,
    SFTSpec,
    StageSpec,
)
from kit.task import data, rewards

# ---------------------------------------------------------------------------------------------------------------
# Loading and validation


def load_recipe(path: str | Path, overrides: typing.Iterable[str] = ()) -> Recipe:
    """Read a recipe YAML, apply `section.field=value` overrides, validate everything that can be checked
    without a model, and return the frozen `Recipe`."""
    path = Path(path)
    if not path.is_file():
        hint = f"; recipes here: {', '.join(sorted(p.name for p in path.parent.glob('*.yaml')))}" \
            if path.parent.is_dir() and any(path.parent.glob("*.yaml")) else ""
        raise RecipeError(f"recipe file not found: {path}{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.start}); save the recipe as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise RecipeError(f"{path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections (model:, data:, grpo: ...), got "
                          f"{type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    recipe = recipe_from_dict(raw, source=str(path), base_dir=path.resolve().parent)
    if recipe.run.name is None:
        recipe = dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, name=path.stem))
    return recipe


def ineffective_overrides(recipe: Recipe, overrides: typing.Iterable[str]) -> list[str]:
    """Overrides this recipe's stages ignore, each with why: `kit train` and the app say so instead of letting a
    change that does nothing look applied."""
    stages = recipe.pipeline()
    notes = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        section, _, name = key.partition(".")
        kinds = {"sft": ("sft", "rejection_sft"), "grpo": ("grpo",)}.get(section)
        if kinds is None:
            continue
        using = [s for s in stages if s.kind in kinds]
        if not using:
            notes.append(f"{key} has no effect: this recipe runs no {section} stage"
                         + (" (sft.enabled=true adds the warm-up)" if section == "sft" and not recipe.stages else ""))
        elif name in ("max_steps", "learning_rate") and all(getattr(s, name) is not None for s in using):
            notes.append(f"{key} has no effect: each {'/'.join(kinds)} stage in `stages` sets its own {name}")
        elif key == "grpo.algorithm" and recipe.grpo.algorithm in ALGORITHMS:
            overridden = {o.partition("=")[0].strip() for o in overrides}
            kept = [f"grpo.{f}" for f, v in preset_values(recipe.grpo.algorithm).items()
                    if getattr(recipe.grpo, f) != v and f"grpo.{f}" not in overridden]
            if kept:  # fields the file sets win over a preset: a saved run's recipe sets them all
                notes.append(f"{key}: the recipe sets {', '.join(kept)} itself, and a field the recipe sets wins "
                             f"over the preset; --set those too, or remove them from the recipe")
    return notes


def on_policy_notes(recipe: Recipe, vllm_correction: bool) -> list[str]:
    """One note when clipping or importance-sampling fields are set but cannot act: if each round of rollouts is
    used within one optimizer step and no vLLM importance-sampling correction runs (`vllm_correction`, which only
    the plan knows), TRL keeps no old log-probs and the ratio exp(logp - logp.detach()) is exactly 1. `kit train`
    says so instead of letting GSPO's or DAPO's clipping look applied."""
    g, defaults = recipe.grpo, GRPOSpec()
    spg = g.steps_per_generation or g.gradient_accumulation_steps
    if vllm_correction or g.gradient_accumulation_steps % (spg * g.num_iterations):
        return []
    idle = [f for f in ("epsilon", "epsilon_high", "delta") if getattr(g, f) != getattr(defaults, f)]
    if g.loss_type == "cispo" and g.epsilon_high is not None and g.epsilon_high < 1:
        idle = [f for f in idle if f != "epsilon_high"]  # cispo caps the ratio itself: below 1 it scales updates
    if g.importance_sampling_level != defaults.importance_sampling_level and g.beta == 0:
        idle.append("importance_sampling_level")  # with beta > 0 it reweights the KL gradient even on-policy
    if not idle:
        return []
    by = (f" (grpo.algorithm={g.algorithm} sets {'it' if len(idle) == 1 else 'them'})"
          if g.algorithm and set(idle) <= set(ALGORITHMS[g.algorithm].sets) else "")
    one = len(idle) == 1
    return [(f"{', '.join(f'grpo.{f}' for f in idle)} {'has' if one else 'have'} no effect here{by}: each round of "
             f"rollouts is used within one optimizer step (num_iterations {g.num_iterations}, steps_per_generation "
             f"{spg}, gradient_accumulation_steps {g.gradient_accumulation_steps}) and no vLLM importance-sampling "
             f"correction runs, so the policy ratio is exactly 1 and nothing is clipped; grpo.num_iterations >= 2 "
             f"or grpo.steps_per_generation above grpo.gradient_accumulation_steps makes {'it' if one else 'them'} "
             "act")]


def preset_values(algorithm: str) -> dict:
    """Every field a preset decides (ALGORITHM_FIELDS): its own settings, the rest at their defaults."""
    defaults = GRPOSpec()
    return {f: ALGORITHMS[algorithm].sets.get(f, getattr(defaults, f)) for f in ALGORITHM_FIELDS}


def _apply_algorithm(raw: dict) -> dict:
    """Fill the fields of grpo.algorithm's preset that the recipe (file and overrides) leaves out. A saved recipe
    lists every field, so reading it back applies nothing: load -> save -> load gives the same recipe."""
    grpo = raw.get("grpo")
    name = grpo.get("algorithm") if isinstance(grpo, dict) else None
    if not isinstance(name, str) or name not in ALGORITHMS:  # unknown names fail in _build, with the choices
        return raw
    return {**raw, "grpo": {**preset_values(name), **grpo}}


def apply_overrides(raw: dict, overrides: typing.Iterable[str]) -> dict:
    """Return a copy of `raw` with `section.field=value` overrides applied (values parsed as YAML).
    `rewards.<name>=<weight>` sets (or adds) one reward's weight."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"override {item!r} is not of the form section.field=value (e.g. grpo.max_steps=5)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        parts = key.split(".")
        if parts[0] == "rewards" and len(parts) == 2:
            listed = raw.get("rewards")
            if listed is None:
                listed = [dataclasses.asdict(r) for r in DEFAULT_REWARDS]
            if not isinstance(listed, list):
                raise RecipeError(f"rewards: expected a list of {{name, weight}}, got {_show(listed)}")
            entries = [dict(r) if isinstance(r, dict) else r for r in listed]
            for r in entries:
                # a user's reward by its function name too: rewards.brevity_reward=0.5 for my.py:brevity_reward
                if isinstance(r, dict) and parts[1] in (r.get("name"), str(r.get("name")).rpartition(":")[2]):
                    r["weight"] = value
                    break
            else:
                entries.append({"name": parts[1], "weight": value})
            raw["rewards"] = entries
        elif len(parts) == 1:
            raw[parts[0]] = value
        elif len(parts) == 2:
            section = raw.get(parts[0])
            if section is None:
                section = {}
            if not isinstance(section, dict):
                raise RecipeError(f"override {key}: `{parts[0]}` is not a section")
            section = dict(section)
            section[parts[1]] = value
            raw[parts[0]] = section
        elif parts[:2] == ["grpo", "trl_args"] and len(parts) == 3:  # one TRL argument: grpo.trl_args.NAME=value
            section = raw.get("grpo") or {}
            if not isinstance(section, dict) or not isinstance(section.get("trl_args") or {}, dict):
                raise RecipeError(f"override {key}: {'grpo.trl_args' if isinstance(section, dict) else 'grpo'} "
                                  "is not a mapping")
            section = dict(section)
            section["trl_args"] = {**(section.get("trl_args") or {}), parts[2]: value}
            raw["grpo"] = section
        else:
            raise RecipeError(f"override {key}: use section.field (one dot), e.g. grpo.learning_rate=1e-5")
    return raw


def recipe_from_dict(raw: dict, source: str = "recipe", base_dir: str | Path | None = None) -> Recipe:
    """Build and validate a `Recipe` from plain data (what YAML gives). Relative paths of local data and reward
    files start at `base_dir` (the recipe's folder), then the current directory, and come back absolute."""
    recipe = _build(Recipe, _apply_algorithm(raw), "")
    resolved = tuple(dataclasses.replace(r, name=rewards.resolve_name(r.name, base_dir, f"rewards[{i}].name"))
                     for i, r in enumerate(recipe.rewards))
    recipe = dataclasses.replace(recipe, rewards=resolved, data=dataclasses.replace(
        recipe.data, source=data.resolve_source(recipe.data.source, base_dir)))
    _check_cross_fields(recipe)
    return recipe


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping of fields, got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else f"; allowed: {', '.join(fields)}"
            raise RecipeError(f"{prefix}{key}: unknown field{hint}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{prefix}{name}: required field is missing"
                                  + (f" ({f.metadata['help']})" if f.metadata.get("help") else ""))
            continue
        values[name] = _convert(raw[name], hints[name], f"{prefix}{name}", f.metadata)
    return cls(**values)


def _convert(value: Any, hint: Any, name: str, meta: typing.Mapping) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, name, meta)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{name}.")
    if origin is dict:
        return _arguments(value, name)
    if origin is tuple:
        if value is None:
            value = []
        if isinstance(value, str) and args[0] is str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{name}: expected a list, got {_show(value)}")
        return tuple(_convert(v, args[0], f"{name}[{i}]", meta) for i, v in enumerate(value))
    if value is None:
        raise RecipeError(f"{name}: must not be empty (null); {meta.get('help', '')}".rstrip("; "))
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{name}: expected true or false, got {_show(value)}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{name}: expected a whole number, got {_show(value)}")
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-6 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise RecipeError(f"{name}: expected a number, got {_show(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{name}: expected a number, got {_show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise RecipeError(f"{name}: {_show(value)} is not a finite number")
    elif hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{name}: expected text, got {_show(value)}")
    choices = meta.get("choices")
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint_text = f" (did you mean {close[0]}?)" if close else ""
        raise RecipeError(f"{name}: {_show(value)} is not allowed; choose one of {', '.join(choices)}{hint_text}")
    lo, hi = meta.get("min"), meta.get("max")
    low = lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo))
    if low or (hi is not None and value > hi):
        rng = " and ".join(([f"{'>' if meta.get('min_exclusive') else '>='} {lo}"] if lo is not None else [])
                           + ([f"<= {hi}"] if hi is not None else []))
        raise RecipeError(f"{name}: {_show(value)} is out of range; must be {rng}")
    return value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _arguments(value: Any, name: str) -> dict:
    """A mapping of argument names to plain values (grpo.trl_args). Only its shape is checked here, without TRL:
    the names meet the installed GRPOConfig in the training preflight."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{name}: expected a mapping of GRPOConfig names to values, e.g. "
                          f"{{sapo_temperature_neg: 1.1}}, got {_show(value)}")
    out = {}
    for key, v in value.items():
        if not (isinstance(key, str) and key.isidentifier()):
            raise RecipeError(f"{name}: {_show(key)} is not an argument name (letters, digits and _)")
        items = v if isinstance(v, list) else [v]
        for item in items:
            if not (item is None or isinstance(item, (bool, int, float, str))):
                raise RecipeError(f"{name}.{key}: expected a number, text, true/false, null or a list of them, got "
                                  f"{_show(v)} (a mapping goes as JSON text, as TRL reads it)")
            if isinstance(item, float) and not math.isfinite(item):
                raise RecipeError(f"{name}.{key}: {_show(item)} is not a finite number")
        # YAML 1.1 reads 1e-3 (no dot) as text
        out[key] = [_plain_number(i) for i in v] if isinstance(v, list) else _plain_number(v)
    return out


def _plain_number(value: Any) -> Any:
    return float(value) if isinstance(value, str) and _NUMBER.fullmatch(value) else value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_cross_fields(r: Recipe) -> None:
    if not r.model.lora_target_modules:
        raise RecipeError("model.lora_target_modules: empty; name the linear layers that get LoRA, e.g. "
                          "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]")
    names = [s.name for s in r.rewards]
    if not names:
        raise RecipeError("rewards: at least one reward is needed; e.g. - {name: correctness_reward, weight: 2.0}")
    functions = [rewards.function_name(n) for n in names]  # TRL's metric names: rewards/<function>/mean
    dupes = {n for n in functions if functions.count(n) > 1}
    if dupes:
        raise RecipeError(f"rewards: {', '.join(sorted(dupes))} listed twice (metrics are named after the function); "
                          "list each reward once, or rename one of the functions")
    if all(s.weight == 0 for s in r.rewards):
        raise RecipeError("rewards: every weight is 0, so nothing would be trained on; give one a weight > 0")

    g = r.grpo
    batch = g.per_device_train_batch_size * g.gradient_accumulation_steps
    if batch % g.num_generations:
        ok = [b for b in range(1, 65) if (b * g.gradient_accumulation_steps) % g.num_generations == 0][:3]
        raise RecipeError(
            f"grpo.per_device_train_batch_size x grpo.gradient_accumulation_steps = "
            f"{g.per_device_train_batch_size} x {g.gradient_accumulation_steps} = {batch} is not a multiple of "
            f"grpo.num_generations ({g.num_generations}); with this grad-accum use per_device_train_batch_size "
            f"in {ok}, or change num_generations")
    spg = g.steps_per_generation
    if spg is not None and (g.per_device_train_batch_size * spg) % g.num_generations:
        raise RecipeError(
            f"grpo.steps_per_generation: per_device_train_batch_size x steps_per_generation = "
            f"{g.per_device_train_batch_size} x {spg} is not a multiple of grpo.num_generations "
            f"({g.num_generations}): a round of rollouts must hold whole groups; change one of them")
    low, high = g.vllm_importance_sampling_clip_min, g.vllm_importance_sampling_clip_max
    if low is not None and high is not None and low >= high:
        raise RecipeError(f"grpo.vllm_importance_sampling_clip_min: {low:g} is not below "
                          f"vllm_importance_sampling_clip_max ({high:g}); lower it or raise the max")
    if low is None and high is None and g.vllm_importance_sampling_mode.endswith("_truncate"):
        raise RecipeError(f"grpo.vllm_importance_sampling_mode: {g.vllm_importance_sampling_mode} clips the ratio "
                          "into [clip_min, clip_max], and both are null; set vllm_importance_sampling_clip_max "
                          "(e.g. 3.0) or use a *_mask mode")
    if g.max_prompt_length + g.max_completion_length > r.model.max_seq_length:
        raise RecipeError(
            f"grpo.max_prompt_length + grpo.max_completion_length = {g.max_prompt_length} + "
            f"{g.max_completion_length} = {g.max_prompt_length + g.max_completion_length} exceeds "
            f"model.max_seq_length ({r.model.max_seq_length}); raise model.max_seq_length or shorten one of them")
    if r.model.lora_alpha > 16 * r.model.lora_rank:
        raise RecipeError(f"model.lora_alpha: {r.model.lora_alpha} is over 16 x lora_rank ({r.model.lora_rank}); "
                          f"such a scale makes LoRA updates explode; use r to 2r")
    data.check_source(r.data.source, "data.source")
    if r.data.answer_format == "number" and r.data.solution_field is None and any(
            st.kind == "sft" for st in r.pipeline()):
        raise RecipeError("sft: the warm-up trains on worked solutions, and data.answer_format=number gives only "
                          "the answer; set data.solution_field to a column with worked solutions, or turn the "
                          "warm-up off (sft.enabled=false)")
    for i, st in enumerate(r.stages):
        if st.kind == "rejection_sft" and "correctness_reward" not in names:
            raise RecipeError(f"stages[{i}]: rejection_sft keeps answers the correctness reward accepts; add "
                              "correctness_reward to rewards (weight 0 logs it without training on it)")
        if st.judge is not None and st.kind != "rejection_sft":
            raise RecipeError(f"stages[{i}].judge: only a rejection_sft stage has a judge (this is {st.kind})")
    if r.stages and r.sft.enabled and r.stages[0].kind != "sft":
        raise RecipeError("sft.enabled: with explicit stages, list the warm-up as a stage (- kind: sft) "
                          "instead of sft.enabled")
    if r.stages and not any(st.kind == "grpo" for st in r.stages):
        raise RecipeError("stages: a pipeline needs at least one grpo stage")


# ---------------------------------------------------------------------------------------------------------------
# Saving and describing


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain data (lists, not tuples) that `recipe_from_dict` reads back to the same recipe."""
    def plain(x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    return plain(dataclasses.asdict(recipe))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe (every field, defaults included): the run folder says how it was trained."""
    text = "# Resolved recipe: every field, defaults included. `kit train` reads it back unchanged.\n"
    text += yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True, width=110)
    Path(path).write_text(text)


def field_help(dotted: str) -> str:
    """The one help text of a field, e.g. field_help("grpo.beta")."""
    section, _, name = dotted.partition(".")
    cls = SECTIONS.get(section)
    if cls is None:
        fields = {f.name: f for f in dataclasses.fields(Recipe)}
        if section in fields:
            return fields[section].metadata["help"]
        raise KeyError(dotted)
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata["help"]
    raise KeyError(dotted)


def iter_fields() -> typing.Iterator[tuple[str, Any, str]]:
    """(dotted name, default, help) for every field: the field table (docs/recipes.md) and the app read this."""
    for f in dataclasses.fields(Recipe):
        if f.name in SECTIONS:
            for g in dataclasses.fields(SECTIONS[f.name]):
                default = g.default if g.default is not dataclasses.MISSING else (
                    g.default_factory() if g.default_factory is not dataclasses.MISSING else "(required)")
                yield f"{f.name}.{g.name}", default, g.metadata["help"]
        elif f.name not in ("model",):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.name == "rewards":
                default = ", ".join(f"{r.name}:{r.weight:g}" for r in DEFAULT_REWARDS)
            yield f.name, default, f.metadata["help"]


def list_recipes(folder: str | Path = "recipes") -> list[Path]:
    return sorted(Path(folder).glob("*.yaml"))
