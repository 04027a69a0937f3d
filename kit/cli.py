"""`kit` command line. Bad input gets one line on stderr and exit code 2, never a traceback.

    kit list                                   recipes, with model, backend, steps and expected VRAM
    kit train recipes/demo.yaml --set grpo.max_steps=20
    kit train --resume runs/demo-20261122-101500
    kit show runs/demo-20261122-101500          summary and a reward table
    kit runs                                    every run folder with its status
    kit fields [section]                        every recipe field with its help text
    kit rewards                                 the reward functions
    kit doctor [RECIPE]                         versions, GPU, install profile, known problems
    kit eval / compare / fit / bench / export / plot / ui    (see `kit COMMAND -h`)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from kit import runs
from kit.app.controller import add_app_arguments
from kit.errors import KitError
from kit.eval.compare import compare_cli
from kit.eval.evaluate import eval_cli
from kit.models import fit
from kit.recipe import ALGORITHMS, iter_fields, list_recipes, load_recipe
from kit.runs import metrics, plots, report
from kit.task.rewards import REWARDS, WRITING_ONE
from kit.tools import bench, doctor, export, study
from kit.train.flow import train

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def _recipe_arg(value: str) -> str:
    """A recipe path, or a bare name found in recipes/ (`kit train demo`)."""
    p = Path(value)
    if not p.exists() and p.suffix not in (".yaml", ".yml"):
        for folder in (Path("recipes"), RECIPES_DIR):
            if (folder / f"{value}.yaml").is_file():
                return str(folder / f"{value}.yaml")
    return value


def _positive(kind):
    """An argparse type: a whole number (int) or a finite number (float) above 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} must be above 0")
        return value
    parse.__name__ = kind.__name__
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (no usage block), exit code 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see `{self.prog} -h`)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kit", description="Consumer-GPU GRPO fine-tuning kit.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list recipes")
    p.add_argument("--dir", default=None, help="recipe folder (default: ./recipes, else the kit's)")

    p = sub.add_parser("train", help="train a recipe, or resume a run")
    p.add_argument("recipe", nargs="?", type=_recipe_arg, help="recipe YAML (or a name in recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a recipe field, e.g. --set grpo.max_steps=20 (repeatable)")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder from its last checkpoint")
    p.add_argument("--run-dir", metavar="DIR", help="create the run folder here instead of "
                   "<run.output_dir>/<name>-<timestamp>")

    p = sub.add_parser("show", help="a run's summary and reward table")
    p.add_argument("run")
    p.add_argument("--every", type=int, default=0, help="one table row every N steps (default: ~15 rows)")

    p = sub.add_parser("runs", help="list run folders")
    p.add_argument("--dir", default="runs")

    p = sub.add_parser("fields", help="recipe fields with their help text")
    p.add_argument("section", nargs="?", help="model, data, sft, grpo, eval, stages, run")
    p.add_argument("--markdown", action="store_true", help="as the field table of docs/recipes.md")

    sub.add_parser("rewards", help="the reward functions")

    p = sub.add_parser("plot", help="write a PNG of a run's reward curves")
    p.add_argument("run")
    p.add_argument("--out", help="PNG path (default: RUN/curves.png)")

    p = sub.add_parser("eval", help="GSM8K accuracy (strict, lenient, format; pass@k, maj@k with --samples) of a "
                       "recipe's base model, a run's adapter or one stage's")
    p.add_argument("target", help="recipe YAML (base model), run folder (its final adapter) or stage folder "
                   "(runs/X/stages/1-sft: that stage's adapter)")
    p.add_argument("--split", choices=("train", "test"), help="default: the recipe's eval.split")
    p.add_argument("--limit", type=_positive(int), help="default: the recipe's eval.limit")
    p.add_argument("--base", action="store_true", help="with a run: evaluate its base model, not the adapter")
    _sampling_args(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")

    p = sub.add_parser("compare", help="two checkpoints on the same questions: B - A with a 95%% interval and "
                       "the strict gain split into format and reasoning")
    p.add_argument("a", metavar="A", help="run folder, stage folder or recipe (its base model); alone: A's base "
                   "model vs A")
    p.add_argument("b", metavar="B", nargs="?", help="run folder, stage folder or recipe")
    p.add_argument("--split", choices=("train", "test"))
    p.add_argument("--limit", type=_positive(int))
    _sampling_args(p)

    p = sub.add_parser("fit", help="estimate peak VRAM of a recipe")
    p.add_argument("recipe", type=_recipe_arg)
    p.add_argument("--gpu-memory", type=_positive(float), metavar="GB",
                   help="GPU size to check against (default: this GPU, else 16)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")

    p = sub.add_parser("bench", help="GRPO steps on a random-weight copy of the recipe's architecture")
    p.add_argument("recipe", type=_recipe_arg)
    p.add_argument("--random-weights", action="store_true", help="required: build the model from its config "
                   "with random weights (no download)")
    p.add_argument("--steps", type=_positive(int), default=3)
    p.add_argument("--out", help="JSON path (default: bench/<recipe>-<backend>.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")

    p = sub.add_parser("export", help="export a run's model (LoRA, merged 16-bit, GGUF)")
    p.add_argument("run")
    p.add_argument("--format", choices=("lora", "merged16", "gguf"), default="lora")
    p.add_argument("--out", help="output folder (default: RUN/export-<format>)")
    p.add_argument("--quantization", help="GGUF type: q8_0 (default), f16, bf16, f32 on any machine; k-quants "
                   "(q4_k_m, q5_k_m, ...) through Unsloth on a CUDA GPU")

    p = sub.add_parser("study", help="a baseline and one trial per varied value, each compared with the baseline "
                       "on the same held-out questions (95%% intervals, seed-to-seed spread)")
    p.add_argument("recipe", type=_recipe_arg, help="recipe YAML (or a name in recipes/): the baseline")
    p.add_argument("--vary", action="extend", nargs="+", default=[], required=True, metavar="SECTION.FIELD=V1,V2",
                   help="a field and its values, one trial each (repeatable), e.g. --vary grpo.beta=0,1e-3")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a recipe field for the baseline and every trial (repeatable)")
    p.add_argument("--seeds", type=_positive(int), default=1, help="runs per configuration: grpo.seed = the "
                   "recipe's + 0..N-1 (default 1)")
    p.add_argument("--limit", type=_positive(int), help="held-out questions (default: the recipe's eval.limit)")
    p.add_argument("--samples", type=_positive(int), metavar="K", help="also sample K answers per question: "
                   "pass@1, pass@K, maj@K")
    p.add_argument("--out", metavar="DIR", help="study folder (default: studies/<recipe name>); the same "
                   "arguments again continue it")
    p.add_argument("--grid", action="store_true", help="every combination of the varied values, not one field "
                   "at a time")

    add_app_arguments(sub.add_parser("ui", help="launch the Gradio app"))

    p = sub.add_parser("doctor", help="versions, GPU, install profile and known problems (paste it into an issue)")
    p.add_argument("recipe", nargs="?", type=_recipe_arg, help="also: what this recipe would run here, and if it "
                   "fits")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------------------------


def cmd_list(args) -> int:
    folder = Path(args.dir) if args.dir else (Path("recipes") if Path("recipes").is_dir() else RECIPES_DIR)
    paths = list_recipes(folder)
    if not paths:
        raise KitError(f"no recipes (*.yaml) in {folder}")
    rows = []
    for path in paths:
        try:
            r = load_recipe(path)
        except KitError as e:
            rows.append((path.stem, f"INVALID: {e}", "", "", ""))
            continue
        steps = " + ".join(f"{s.kind} {r.stage_steps(s)}" for s in r.pipeline())
        rows.append((path.stem, r.model.name, r.model.backend, steps, _vram(r)))
    _table(("recipe", "model", "backend", "steps", "est. peak VRAM"), rows)
    print(f"\nrun one: kit train {folder}/<recipe>.yaml   details: kit fit <recipe>")
    return 0


def _vram(recipe) -> str:
    try:
        est = fit.estimate(recipe)
    except KitError:
        return "-"
    return "-" if est is None else f"{est.total_gb:.1f} GiB"


def cmd_train(args) -> int:
    if not args.recipe and not args.resume:
        raise KitError("give a recipe (kit train recipes/demo.yaml) or --resume RUN")
    if args.recipe and args.resume:
        raise KitError("give either a recipe or --resume RUN, not both (a resumed run uses its own recipe.yaml)")

    train(args.recipe, args.overrides, resume=args.resume, run_dir=args.run_dir)
    return 0


def _sampling_args(p) -> None:
    p.add_argument("--samples", type=_positive(int), metavar="K",
                   help="also sample K answers per question: pass@1, pass@k, maj@K")
    p.add_argument("--temperature", type=_positive(float), help="sampling temperature (default: eval.temperature)")
    p.add_argument("--json", action="store_true", help="print only the result as one JSON object (logs to stderr)")


def cmd_show(args) -> int:
    run = runs.open_run(args.run)
    s = runs.read_summary(run)
    state = runs.status(run, s)
    print(f"run      {run}")
    print(f"status   {state}" + (f" ({s.get('phase')})" if state == "running" and s.get("phase") else ""))
    for key, value in report.facts(s):
        print(f"{key:<8} {value}")
    for line in report.stage_lines(s):
        print(f"stage    {line}")
    for note in s.get("notes", []):
        print(f"note     {note}")
    if s.get("message"):
        print(f"message  {s['message']}")
    for ckpt, problem in runs.torn_checkpoints(run, s):
        hint = "" if problem.startswith("set aside") else "; --resume skips it, continuing from the last complete one"
        print(f"torn     {ckpt.relative_to(run)} ({problem}{hint})")
    records = metrics.read_jsonl(run / runs.METRICS)
    grpo = [r for r in records if "reward" in r or any(k.startswith("eval/") for k in r)]
    if not grpo:
        print("\nno GRPO metrics yet")
        return 0
    keys = metrics.reward_keys(grpo)
    passes = sorted({k for r in grpo for k in r if k.startswith("eval/pass@")}, key=lambda k: int(k[10:]))
    extra = [k for k in ("completions/mean_length", "completions/clipped_ratio", "kl", "frac_reward_zero_std",
                         "eval/accuracy_strict", "eval/accuracy_lenient", *passes) if any(k in r for r in grpo)]
    every = args.every or max(1, len(grpo) // 15)
    short = {"completions/mean_length": "len", "completions/clipped_ratio": "clipped", "frac_reward_zero_std":
             "zero_std", "eval/accuracy_strict": "eval_strict", "eval/accuracy_lenient": "eval_lenient",
             **{k: "eval_" + k[5:] for k in passes}}
    header = ["stage", "step"] + [k.split("/")[1] if "/" in k and k.startswith("rewards/") else k for k in keys]
    header += [short.get(k, k) for k in extra]
    rows = []
    for i, r in enumerate(grpo):
        if i % every and i != len(grpo) - 1 and not any(k.startswith("eval/") for k in r):
            continue
        rows.append([r.get("stage", ""), r.get("step", "")] + [report.num(r.get(k)) for k in keys + extra])
    print()
    _table(header, rows)
    gains = report.gains(s)
    if gains:
        print(f"\nfirst -> last 20% of logged steps (evaluations: first -> last): {gains}")
    print("\nGRPO's loss is not a progress signal (it is ~0 by construction); watch the rewards.")
    return 0


def _table(header, rows) -> None:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def cmd_runs(args) -> int:
    paths = runs.list_runs(args.dir)
    if not paths:
        print(f"no runs in {args.dir}/ yet: kit train recipes/demo.yaml")
        return 0
    rows = []
    for run in paths:
        s = runs.read_summary(run)
        torn = len(runs.torn_checkpoints(run, s))
        state = runs.status(run, s) + (f" ({torn} torn checkpoint{'s' if torn > 1 else ''})" if torn else "")
        rows.append((run.name, state, report.steps(s), report.num(report.last_reward(run)), s.get("model", "")))
    _table(("run", "status", "steps", "last reward", "model"), rows)
    return 0


def cmd_fields(args) -> int:
    rows = [row for row in iter_fields() if not args.section or row[0].split(".")[0] == args.section]
    if not rows:
        raise KitError(f"unknown section {args.section!r}; sections: model, data, rewards, sft, grpo, eval, "
                       "stages, run")
    if args.markdown:
        print(fields_markdown(rows))
        return 0
    for name, default, help_ in rows:
        shown = repr(default) if isinstance(default, str) else str(default)
        print(f"{name}  (default {shown if len(shown) <= 40 else shown[:37] + '...'})\n    {help_}")
        if name == "grpo.algorithm":
            print("\n".join(f"    {line}" for line in algorithm_lines()))
    return 0


def _paper(a) -> str:
    return f"{a.title} (arXiv {a.arxiv})" if a.arxiv else a.title


def algorithm_lines() -> list[str]:
    """grpo.algorithm's presets, one line each with its paper and the fields it sets (from kit.recipe.ALGORITHMS)."""
    return [f"- {name}: {_paper(a)}. Sets {', '.join(f'{k}={_value(v)}' for k, v in a.sets.items())}. {a.note}."
            for name, a in ALGORITHMS.items()]


def algorithms_markdown() -> str:
    """docs/grpo-options.md's preset table, from kit.recipe.ALGORITHMS."""
    lines = ["| algorithm | paper | sets | note |", "|---|---|---|---|"]
    for name, a in ALGORITHMS.items():
        paper = f"{a.title} ([arXiv {a.arxiv}](https://arxiv.org/abs/{a.arxiv}))" if a.arxiv else a.title
        sets = ", ".join(f"`{k}: {_value(v)}`" for k, v in a.sets.items())
        lines.append(f"| `{name}` | {paper} | {sets} | {a.note}. |")
    return "\n".join(lines)


def _value(value) -> str:
    """As YAML writes it: true, null, 0.0003."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return f"{value:g}" if isinstance(value, float) else str(value)


def fields_markdown(rows=None) -> str:
    """The recipe field reference (docs/recipes.md): one row per field, its default and its one help text."""
    rows = list(iter_fields()) if rows is None else rows
    lines = ["| field | default | what it does (trade-off) |", "|---|---|---|"]
    for name, default, help_ in rows:
        shown = str(default).replace("\n", "\\n").replace("|", "\\|")
        text = help_.replace("|", "\\|")
        lines.append(f"| `{name}` | `{shown}` | {text} |")
    return "\n".join(lines)


def cmd_rewards(args) -> int:
    for name, fn in REWARDS.items():
        print(f"{name}\n    {fn.__doc__.strip().splitlines()[0]}")
    print("\n" + WRITING_ONE)
    return 0


def cmd_plot(args) -> int:
    run = runs.open_run(args.run)
    out = plots.plot_run(run, args.out)
    print(out)
    return 0


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


def cmd_eval(args) -> int:
    """kit eval / kit compare. With --json stdout carries the result alone: whatever else writes there meanwhile
    (vLLM's logger writes to stdout, and so may its engine processes) goes to stderr."""
    run = compare_cli if args.command == "compare" else eval_cli
    if not args.json:
        return run(args)
    with _stdout_to_stderr() as args.result_out:
        return run(args)


def cmd_study(args) -> int:
    return study.cli(args)


def cmd_ui(args) -> int:
    from kit.app import ui  # gradio takes seconds to import: only `kit ui` pays for it

    return ui.cli(args)


COMMANDS = {
    "list": cmd_list, "train": cmd_train, "show": cmd_show, "runs": cmd_runs, "fields": cmd_fields,
    "rewards": cmd_rewards, "plot": cmd_plot,
    "eval": cmd_eval, "compare": cmd_eval, "fit": fit.cli, "bench": bench.cli, "export": export.cli, "ui": cmd_ui,
    "doctor": doctor.cli, "study": cmd_study,
}

if __name__ == "__main__":
    sys.exit(main())
