"""QLoRA parity on the real model: recipes/smollm2-cpu.yaml trained in fp32 LoRA and in nf4 QLoRA (same seed, same
recipe otherwise), each compared with its start, and the two trained models with each other. Prints a table,
asserts nothing; the figures go to docs/benchmarks.md ("QLoRA parity") by hand, with the date and how busy the
machine was. About 45 minutes of both cores (two ~13-minute runs, then evaluations of 200 questions).

    python benchmarks/qlora_parity.py --out bench/qlora-parity            # make real-model first
    python benchmarks/qlora_parity.py --out bench/qlora-parity --limit 50 # a quicker look

Per precision, one after the other: `kit train recipes/smollm2-cpu.yaml --set model.load_in_4bit=...` as a user
runs it (SFT warm-up, then GRPO), its wall time, GRPO seconds per step (metrics.jsonl, the first step dropped) and
the peak RSS of the training process (os.wait4). Then `kit compare`, each on the first --limit test questions,
greedy, paired 95% intervals:
- start -> trained: the base model (loaded as the run was trained: nf4 for the nf4 run) vs the final adapter;
- warm-up -> trained: the SFT stage's adapter vs the final one (what GRPO added);
- fp32 -> nf4: the two trained models.
Run again with the same --out: finished runs and saved evaluations are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kit import runs  # noqa: E402
from kit.runs import metrics  # noqa: E402

RECIPE = ROOT / "recipes" / "smollm2-cpu.yaml"
PRECISIONS = {"fp32": "model.load_in_4bit=false", "nf4": "model.load_in_4bit=true"}


def _kit(*args: str) -> list[str]:
    return [sys.executable, "-m", "kit", *args]


def _finished(folder: Path) -> Path | None:
    for run in runs.list_runs(folder):
        if runs.status(run) == "finished":
            return run
    return None


def train(name: str, out: Path, extra: list[str]) -> dict:
    """A finished run of RECIPE in `name` precision under out/name (reused if there), with its cost."""
    folder = out / name
    record = folder / "cost.json"
    run = _finished(folder)
    if run is None or not record.exists():
        sets = [PRECISIONS[name], f"run.output_dir={folder}", f"run.name={name}", *extra]
        cmd = _kit("train", str(RECIPE), *[a for s in sets for a in ("--set", s)])
        print(f"[parity] training {name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        t0 = time.time()
        with open(out / f"{name}.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"kit train ({name}) failed; see {out / f'{name}.log'}")
        run = _finished(folder)
        steps = [r["step_time"] for r in metrics.read_jsonl(run / "metrics.jsonl")
                 if "step_time" in r and r.get("stage", "").endswith("grpo")]
        cost = {"wall_s": round(time.time() - t0, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024),
                "grpo_step_s": steps}
        record.write_text(json.dumps(cost, indent=2))
    return {"run": run, **json.loads(record.read_text())}


def compare(a: str | Path, b: str | Path | None, limit: int) -> dict:
    cmd = _kit("compare", str(a), *([str(b)] if b else []), "--limit", str(limit), "--json")
    print(f"[parity] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"kit compare failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sft_stage(run: Path) -> Path:
    (stage,) = [p for p in (run / "stages").iterdir() if p.name.endswith("-sft")]
    return stage


def _cell(table: dict, metric: str = "accuracy_strict") -> str:
    a, b, d = table["a"][metric], table["b"][metric], table["diff"][metric]
    return f"{a:.3f} -> {b:.3f}  {d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "qlora-parity")
    parser.add_argument("--limit", type=int, default=200, help="held-out questions each comparison answers")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="more recipe overrides, both runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    trained = {name: train(name, args.out, args.sets) for name in PRECISIONS}
    rows = {}
    for name, t in trained.items():
        rows[f"{name}: start -> trained"] = compare(t["run"], None, args.limit)
        rows[f"{name}: warm-up -> trained"] = compare(_sft_stage(t["run"]), t["run"], args.limit)
    rows["fp32 trained -> nf4 trained"] = compare(trained["fp32"]["run"], trained["nf4"]["run"], args.limit)
    (args.out / "parity.json").write_text(json.dumps({"trained": {k: {**v, "run": str(v["run"])}
                                                                  for k, v in trained.items()},
                                                      "compare": rows}, indent=2, default=str))
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"recipes/smollm2-cpu.yaml, fp32 LoRA vs nf4 QLoRA; load average at the end {load}\n")
    print(f"{'precision':<10} {'wall min':>9} {'GRPO s/step':>12} {'peak RSS MiB':>13}")
    for name, t in trained.items():
        steady = t["grpo_step_s"][1:] or t["grpo_step_s"]
        print(f"{name:<10} {t['wall_s'] / 60:>9.1f} {statistics.median(steady):>12.2f} {t['peak_rss_mib']:>13}")
    print(f"\nstrict accuracy, A -> B, B - A [paired 95% interval], n = {args.limit}")
    for label, table in rows.items():
        print(f"{label:<28} {_cell(table)}   lenient {_cell(table, 'accuracy_lenient')}")


if __name__ == "__main__":
    main()
