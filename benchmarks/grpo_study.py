"""GRPO as the field runs it now, measured on the demo: which of today's GRPO settings move held-out accuracy more
than changing the seed does? Two studies (`kit study`) on recipes/demo.yaml, two seeds of each baseline:

1. studies/grpo-options: G 4 / 8 (the questions per step kept), beta 0 / 1e-4 / 1e-3, the learning rate at three
   values a decade apart around the recipe's, grpo.algorithm grpo / dr_grpo / dapo / gspo.
2. studies/grpo-clip: the clip family, epsilon 0.1 / 0.2 / 0.3 and epsilon_high 0.28, on an off-policy baseline
   (grpo.num_iterations=2: on-policy the ratio is exactly 1 and nothing is clipped).

    python benchmarks/grpo_study.py             # the measurement: 28 trials, about 75 min on 2 CPU cores (2026-12-07)
    python benchmarks/grpo_study.py --quick     # the same studies in a few steps: checks the path, not the answer

Not a test. Run again with the same arguments: finished trials are reused, an interrupted one resumes. Prints each
study's table (study.md; the plot is study.png beside it) and how long it took, wall and CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kit.errors import KitError  # noqa: E402
from kit.recipe import load_recipe  # noqa: E402
from kit.tools.study import STUDY_MD, run_study  # noqa: E402

RECIPE = ROOT / "recipes" / "demo.yaml"
# --quick: a short warm-up, 3 GRPO steps of 2 questions (from 256), no evaluation during training, a small
# held-out set
QUICK = ["sft.max_steps=40", "sft.limit=256", "data.limit=256", "grpo.max_steps=3", "grpo.save_steps=3",
         "grpo.per_device_train_batch_size=16", "eval.every_steps=0"]


def studies(quick: bool) -> list[tuple[str, list[str], list[str]]]:
    """(folder name, --vary, --set) of each study."""
    lr = load_recipe(RECIPE).grpo.learning_rate
    sets = QUICK if quick else []
    suffix = "-quick" if quick else ""
    return [
        (f"grpo-options{suffix}",
         ["grpo.num_generations=4,8", "grpo.beta=0,1e-4,1e-3", f"grpo.learning_rate={lr / 10:g},{lr:g},{lr * 10:g}",
          "grpo.algorithm=grpo,dr_grpo,dapo,gspo"], sets),
        (f"grpo-clip{suffix}", ["grpo.epsilon=0.1,0.2,0.3", "grpo.epsilon_high=0.28"],
         [*sets, "grpo.num_iterations=2"]),
    ]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few steps per trial: checks the path in minutes")
    p.add_argument("--seeds", type=int, default=2, help="seeds per configuration (default 2)")
    p.add_argument("--limit", type=int, help="held-out questions (default: 200; --quick: 32)")
    p.add_argument("--samples", type=int, help="also sample K answers per question (pass@1, pass@K, maj@K)")
    p.add_argument("--out", default="studies", help="folder that receives the study folders")
    p.add_argument("--only", choices=("options", "clip"), help="run one of the two studies")
    args = p.parse_args()
    limit = args.limit or (32 if args.quick else 200)

    t0, c0, done = time.time(), cpu_seconds(), []
    for name, vary, sets in studies(args.quick):
        if args.only and not name.startswith(f"grpo-{args.only}"):
            continue
        started = time.time()
        try:
            out = run_study(RECIPE, vary, sets, seeds=args.seeds, limit=limit, samples=args.samples,
                            out=Path(args.out) / name)
        except KitError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        done.append((out, time.time() - started))
    for out, seconds in done:
        print(f"\n{(out / STUDY_MD).read_text()}\n({out}: {seconds / 60:.1f} min)")
    print(f"\ntook {(time.time() - t0) / 60:.1f} min wall, {(cpu_seconds() - c0) / 60:.1f} min CPU "
          f"({'quick' if args.quick else 'full'}, {args.seeds} seeds, {limit} held-out questions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
