"""GSM8K accuracy, measured the same way before and after training, and the numbers that tell a reasoning gain
from a format gain.

strict: the number in the first <answer> block is right (what correctness_reward pays for).
lenient: the last number anywhere in the answer is right (credits a right answer in the wrong layout).
format: the strict <reasoning>/<answer> layout (format_reward). Greedy decoding, the recipe's system prompt.

With K samples per question (`kit eval --samples K`, temperature > 0) also, strict and `_lenient`:
pass@1   mean correctness of the K samples;
pass@k   the unbiased estimator of Chen et al. 2021, 1 - C(K-c, k) / C(K, k) for c right of K, averaged over the
         questions (reported for k = 2, 4, ... and K; at k = K it is the share of questions with a right sample);
maj@K    the majority answer of the K samples is right. Samples without an answer do not vote (a question whose
         samples all lack one counts as wrong); a tie goes to the tied answer sampled first.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path

from kit.data import answers_match, extract_answer, to_prompt
from kit.rewards import format_reward


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the chance that at least one of k samples is right, from c right of n samples
    (Chen et al. 2021, in its numerically stable product form).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4), pass_at_k(4, 4, 1)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    p = 1.0
    for i in range(n - c + 1, n + 1):
        p *= 1.0 - k / i
    return 1.0 - p


def majority(answers: list[str | None]) -> str | None:
    """The most frequent answer (canonical strings from extract_answer); None answers do not vote; a tie goes to
    the tied answer that occurs first. None when no sample has an answer.

    >>> majority(["3", None, "4", "4", "3"]), majority([None, None]), majority(["7", "5", "5", "7"])
    ('3', None, '7')
    """
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def pass_ks(k: int) -> list[int]:
    """The k reported for K samples: 1, 2, 4, ... below K, and K."""
    ks, x = [], 1
    while x < k:
        ks.append(x)
        x *= 2
    return ks + [k]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


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
    summary = {"n": len(items), "accuracy_strict": _mean(i["correct_strict"] for i in items),
               "accuracy_lenient": _mean(i["correct_lenient"] for i in items),
               "format_rate": _mean(i["format"] for i in items), "mean_length": _mean(i["length"] for i in items),
               "length_unit": "tokens" if tokenizer else "characters"}
    return summary, items


def score_samples(rows: list[dict], samples: list[list[str]]) -> tuple[dict, list[dict]]:
    """K sampled answers per row scored: the summary's pass@k / maj@K (strict and `_lenient`), and per row the
    samples with their extracted answers and correctness plus the per-row figures (`sampled`)."""
    k = len(samples[0]) if samples else 0
    if k < 1 or any(len(s) != k for s in samples):
        raise ValueError("score_samples needs the same number (>= 1) of samples for every row")
    per_row = []
    for row, texts in zip(rows, samples, strict=True):
        drawn = []
        for text in texts:
            strict, lenient = extract_answer(text), extract_answer(text, lenient=True)
            drawn.append({"completion": text, "pred_strict": strict, "pred_lenient": lenient,
                          "correct_strict": answers_match(strict, row["answer"]),
                          "correct_lenient": answers_match(lenient, row["answer"]),
                          "format": format_reward([text])[0] == 1.0})
        figures = {}
        for suffix, key in (("", "strict"), ("_lenient", "lenient")):
            c = sum(d[f"correct_{key}"] for d in drawn)
            vote = majority([d[f"pred_{key}"] for d in drawn])
            figures[f"correct{suffix}"] = c
            figures[f"maj{suffix}"] = vote
            figures[f"maj@{k}{suffix}"] = answers_match(vote, row["answer"])
            for j in pass_ks(k):
                figures[f"pass@{j}{suffix}"] = pass_at_k(k, c, j)
        per_row.append({"samples": drawn, "sampled": figures})
    summary = {"samples": k}
    for suffix in ("", "_lenient"):
        for j in pass_ks(k):
            summary[f"pass@{j}{suffix}"] = _mean(r["sampled"][f"pass@{j}{suffix}"] for r in per_row)
        summary[f"maj@{k}{suffix}"] = _mean(r["sampled"][f"maj@{k}{suffix}"] for r in per_row)
    summary["format_rate_sampled"] = _mean(d["format"] for r in per_row for d in r["samples"])
    return summary, per_row


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


def difference_interval(base: list, trained: list) -> tuple[float, float, float]:
    """Difference in the mean (trained - base) over the same items (booleans or per-item rates), with a 95%
    interval from the paired differences (normal approximation)."""
    if len(base) != len(trained) or not base:
        raise ValueError("paired comparison needs the same, non-empty item list")
    d = [float(t) - float(b) for b, t in zip(base, trained)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def gain_split(a_items: list[dict], b_items: list[dict]) -> dict:
    """Where the strict gain from A to B comes from, question by question (paired by question):
    format_gain: right by the lenient criterion in A, strictly right in B (the answer was there, the layout new);
    reasoning_gain: wrong under both criteria in A, strictly right in B;
    format_loss / reasoning_loss: the reverse (strictly right in A; in B right only leniently / wrong under both).
    Strictly right implies leniently right, so strict(B) - strict(A) = the two gains - the two losses. Each entry:
    `count` and `share` (of n)."""
    by_q = {i["question"]: i for i in a_items}
    pairs = [(by_q[b["question"]], b) for b in b_items if b["question"] in by_q]
    counts = dict.fromkeys(("format_gain", "reasoning_gain", "format_loss", "reasoning_loss"), 0)
    for a, b in pairs:
        if b["correct_strict"] and not a["correct_strict"]:
            counts["format_gain" if a["correct_lenient"] else "reasoning_gain"] += 1
        elif a["correct_strict"] and not b["correct_strict"]:
            counts["format_loss" if b["correct_lenient"] else "reasoning_loss"] += 1
    n = len(pairs)
    out = {key: {"count": c, "share": c / n if n else 0.0} for key, c in counts.items()}
    out["n"] = n
    return out


def write_results(folder: Path, name: str, summary: dict, items: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=2))
    with open(folder / f"{name}.jsonl", "w") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# kit eval / kit compare


def _log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)  # stdout carries only the result (one JSON object with --json)


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


class Side:
    """One side of an evaluation: a recipe's base model (adapter None), a run's final adapter, or one stage's."""

    def __init__(self, path: str, overrides: list[str] = (), base: bool = False):
        from kit import runs
        from kit.recipe import KitError, load_recipe

        p = Path(path)
        stage = p.is_dir() and p.parent.name == runs.STAGES and (p / runs.RECIPE).is_file()
        if stage:  # runs/X/stages/1-sft: that stage's resolved recipe and adapter
            self.recipe, self.folder = load_recipe(p / runs.RECIPE, overrides), p / runs.EVAL
            self.adapter = None if base else p / runs.ADAPTER
            if self.adapter is not None and not (self.adapter / "adapter_config.json").is_file():
                raise KitError(f"{p} has no adapter yet (the stage has not finished); pick a finished stage or "
                               "the run folder")
            self.label = f"{p.parent.parent.name}/{p.name}"
        else:
            self.recipe, run = _target(path, overrides)
            self.folder = run / runs.EVAL if run is not None else _eval_folder(self.recipe, None)
            self.adapter = runs.latest_adapter(run) if run is not None and not base else None
            if run is not None and not base and self.adapter is None:
                raise KitError(f"{run} has no adapter yet; evaluate its base model with --base, or wait for a "
                               "stage to finish")
            self.label = run.name if run is not None else Path(path).stem
        if self.adapter is None:
            self.label += " (base model)"
        self.kind = "trained" if self.adapter is not None else "base"

    @property
    def id(self) -> str | None:
        return adapter_id(self.adapter)


def _rows(recipe, split: str | None, limit: int | None) -> tuple[str, list[dict]]:
    from kit import data

    split = split or recipe.eval.split
    limit = limit or recipe.eval.limit
    # The first N of the split, unshuffled: the same items before and after training, run after run.
    return split, data.questions(recipe.data, split, limit, shuffle=False)


def _generator(recipe, adapter):
    from kit import data
    from kit.generation import Generator
    from kit.model import load_for_inference

    model, tokenizer, lora_request = load_for_inference(recipe, adapter)
    gen = Generator(model, tokenizer, lora_request, data.template_kwargs(recipe.data))
    _log(f"[kit] eval: answers from {gen.engine_name}")
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


def cli(args) -> int:
    """kit eval / kit compare. With --json stdout carries the result alone: whatever else writes there meanwhile
    (vLLM's logger writes to stdout, and so may its engine processes) goes to stderr."""
    run = compare_cli if args.command == "compare" else eval_cli
    if not args.json:
        return run(args)
    with _stdout_to_stderr() as args.result_out:
        return run(args)


@contextlib.contextmanager
def _stdout_to_stderr():
    """File descriptor 1 points at stderr inside (child processes inherit that); yields the real stdout."""
    sys.stdout.flush()
    saved, python_stdout = os.dup(1), sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr  # and Python's own stdout, which need not be descriptor 1
    result = os.fdopen(os.dup(saved), "w")
    try:
        yield result
    finally:
        result.close()
        sys.stdout = python_stdout
        os.dup2(saved, 1)
        os.close(saved)


def eval_cli(args) -> int:
    side = Side(args.target, args.overrides, base=args.base)
    split, rows = _rows(side.recipe, args.split, args.limit)
    settings = _settings(side.recipe, args)
    name = _name(side.kind, split, settings)
    summary, items = run_eval(side.recipe, _generator(side.recipe, side.adapter), split, rows, name, settings)
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
    from kit.metrics import read_jsonl

    if not (folder / f"{name}.json").is_file():
        return None
    summary = json.loads((folder / f"{name}.json").read_text())
    items = read_jsonl(folder / f"{name}.jsonl")
    if ([i["question"] for i in items] != [r["question"] for r in rows] or summary.get("adapter") != adapter
            or summary.get("settings") != settings):
        return None
    return summary, items


def _same_base(a, b) -> bool:
    """Both sides load the same base model the same way, and their adapters (if any) have the same shape: then one
    model in memory serves both (the second adapter's weights are loaded into it)."""
    from dataclasses import asdict

    if asdict(a.recipe.model) != asdict(b.recipe.model):
        return False
    configs = []
    for side in (a, b):
        if side.adapter is not None:
            c = json.loads((side.adapter / "adapter_config.json").read_text())
            configs.append({k: c.get(k) for k in ("r", "lora_alpha", "target_modules", "modules_to_save",
                                                  "base_model_name_or_path")})
    return len(configs) < 2 or configs[0] == configs[1]


def _switch_adapter(gen, adapter: Path) -> None:
    """Load `adapter`'s weights into the generator's model in place of the adapter it holds (same shape)."""
    if gen.lora_request is not None and hasattr(gen.model, "load_lora"):  # Unsloth + vLLM: a LoRA request
        gen.lora_request = gen.model.load_lora(str(adapter))
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(gen.model, load_file(str(adapter / "adapter_model.safetensors")))
    missing = [k for k in getattr(result, "unexpected_keys", []) or []]
    if missing:
        raise RuntimeError(f"{adapter}: {len(missing)} adapter weights did not fit the loaded model")
    if gen.engine is not None:
        gen.engine.loaded = None  # vLLM reloads the merged weights before it answers


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
            gen, holds = _generator(side.recipe, first), first
        if side.adapter is not None and side.adapter != holds:
            _switch_adapter(gen, side.adapter)
            holds = side.adapter
        name = _name(side.kind, split, settings)
        with gen.use_adapter(side.adapter is not None):
            results[i] = run_eval(recipe, gen, split, rows, name, settings)
        results[i][0]["adapter"] = side.id
        write_results(side.folder, name, *results[i])
    return results


def compare_cli(args) -> int:
    """`kit compare A [B]`: B - A on the same items (one argument: A's base model vs A)."""
    from kit import runs

    if args.b is None:
        a, b = Side(args.a, base=True), Side(args.a)
        if b.adapter is None:
            from kit.recipe import KitError

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


DIFF_KEYS = ("accuracy_strict", "accuracy_lenient", "format_rate")


def comparison(a: tuple[dict, list[dict]], b: tuple[dict, list[dict]]) -> dict:
    """Paired A vs B table: {"n", "a": summary, "b": summary, "diff": {metric: {value, low, high}}, "gain": ...}
    with diff = B - A and its 95% interval over the questions both answered; with samples on both sides the
    diff also holds pass@1, pass@K, maj@K (strict and _lenient), from the per-question figures."""
    (sa, items_a), (sb, items_b) = a, b
    by_q = {i["question"]: i for i in items_a}
    pairs = [(by_q[i["question"]], i) for i in items_b if i["question"] in by_q]
    if not pairs:
        raise ValueError("the two evaluations share no question")
    fields = {"accuracy_strict": "correct_strict", "accuracy_lenient": "correct_lenient", "format_rate": "format"}
    diff = {}
    for key, field in fields.items():
        value, low, high = difference_interval([p[0][field] for p in pairs], [p[1][field] for p in pairs])
        diff[key] = {"value": value, "low": low, "high": high}
    k = sa.get("samples") if sa.get("samples") == sb.get("samples") else None
    if k and all("sampled" in x for p in pairs for x in p):
        for suffix in ("", "_lenient"):
            for key in (f"pass@1{suffix}", f"pass@{k}{suffix}", f"maj@{k}{suffix}"):
                value, low, high = difference_interval([float(p[0]["sampled"][key]) for p in pairs],
                                                       [float(p[1]["sampled"][key]) for p in pairs])
                diff[key] = {"value": value, "low": low, "high": high}
    return {"n": len(pairs), "a": sa, "b": sb, "diff": diff, "gain": gain_split(items_a, items_b)}


def format_comparison(table: dict) -> str:
    """The compare table as text: A, B, B - A with its interval per metric, then the strict gain split."""
    a, b, n = table["a"], table["b"], table["n"]
    lines = [f"{'metric':<18} {'A':>7} {'B':>7} {'B - A':>7}   95% interval of the difference"]
    for key, d in table["diff"].items():
        lines.append(f"{key:<18} {a[key]:>7.1%} {b[key]:>7.1%} {d['value']:>+7.1%}   [{d['low']:+.1%}, "
                     f"{d['high']:+.1%}]")
    g = table["gain"]
    lines += ["", "strict gain, question by question (A -> B):"]
    for key, text in (("format_gain", "format gain: right only leniently in A, strictly right in B"),
                      ("reasoning_gain", "reasoning gain: wrong under both criteria in A, strictly right in B"),
                      ("format_loss", "format loss: strictly right in A, right only leniently in B"),
                      ("reasoning_loss", "reasoning loss: strictly right in A, wrong under both in B")):
        lines.append(f"  {g[key]['count']:>4} ({g[key]['share']:>6.1%})  {text}")
    net = (g["format_gain"]["count"] + g["reasoning_gain"]["count"] - g["format_loss"]["count"]
           - g["reasoning_loss"]["count"])
    lines.append(f"  net {net:+d} of {n} = strict B - A")
    return "\n".join(lines)
