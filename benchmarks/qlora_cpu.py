"""fp32 LoRA vs nf4 QLoRA on this machine's CPU, on the real model (SmolLM2-135M-Instruct, builtin:smollm2-135m;
make real-model): prints a table, asserts nothing. Results go to docs/benchmarks.md ("4-bit on CPU") by hand, with
the date and how busy the machine was.

    python benchmarks/qlora_cpu.py                       # every variant, 4 GRPO steps each, one thread
    python benchmarks/qlora_cpu.py --steps 6 --variants fp32 nf4 --threads 2

Per variant, each in a fresh process, one after the other:
- train: `kit train recipes/smollm2-cpu.yaml` as a user runs it, GRPO only (no warm-up, no evaluation, no
  checkpoints), G=4 answers to 2 questions per step, 64 completion tokens; GRPO seconds per step from the run's
  metrics.jsonl (the first step apart: it warms up) and the process's peak RSS (resource.getrusage);
- load: the model as kit.models.loading.load builds it for training: bytes its weights take in memory (4-bit
  layers: the packed nf4 bytes and their quantization state), and the seconds of one greedy generation of 8
  prompts x 64 tokens (eval mode, as evaluation and chat answer), for nf4 also with bitsandbytes' AVX512-BF16
  inference kernel (the repack the kit keeps off: kit.models.loading.keep_dequantizing).

Each child runs with --threads torch threads (OMP_NUM_THREADS, default 1): on a machine shared with other jobs, 2
threads per process on 2 cores measured up to 10x slower and erratic (their threads wait on each other's
preempted ones); one thread each gives comparable numbers.

Variants: fp32 (float32 LoRA, adamw_torch: recipes/smollm2-cpu.yaml as shipped), nf4 (nf4 double quant, float32
compute, adamw_torch), nf4-8bit (nf4 with bitsandbytes' 8-bit AdamW), fp32-8bit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "fp32": ["model.load_in_4bit=false", "grpo.optim=adamw_torch"],
    "nf4": ["model.load_in_4bit=true", "grpo.optim=adamw_torch"],
    "nf4-8bit": ["model.load_in_4bit=true", "grpo.optim=adamw_8bit"],
    "fp32-8bit": ["model.load_in_4bit=false", "grpo.optim=adamw_8bit"],
}
RECIPE = ROOT / "recipes" / "smollm2-cpu.yaml"
PROMPTS = ["What is 2+2? Give only the number.", "Name three colours.", "Write a haiku about the sea.",
           "Explain what a prime number is.", "Ava has 3 apples and gets 4 more. How many apples does she have?",
           "What is the capital of France?", "Give me a tip for learning to code.", "Describe a cat in one sentence."]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _train_child(variant: str, steps: int, out: str) -> dict:
    from kit.runs import metrics
    from kit.train.flow import train

    sets = [*VARIANTS[variant], "sft.enabled=false", "stages=[]", f"grpo.max_steps={steps}",
            "grpo.num_generations=4", "grpo.per_device_train_batch_size=8", "grpo.max_completion_length=64",
            "grpo.save_steps=100000", "grpo.completions_every=0", "eval.every_steps=0", f"run.output_dir={out}"]
    run = train(RECIPE, sets)
    times = [r["step_time"] for r in metrics.read_jsonl(run / "metrics.jsonl") if "step_time" in r]
    return {"step_s": times, "peak_rss_mib": round(_peak_rss_mib(), 1)}


def _weight_bytes(model) -> int:
    """Bytes the model's weights take: parameters and buffers as stored (a 4-bit layer's weight is its packed
    uint8 nf4 data), plus each 4-bit layer's quantization state (absmax, its own quantization, the code)."""
    import torch
    from bitsandbytes.nn import Params4bit

    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    for p in model.parameters():
        if isinstance(p, Params4bit) and p.quant_state is not None:
            state = p.quant_state.as_dict(packed=True)
            total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return total


def _load_child(variant: str) -> dict:
    import torch

    from kit.models.loading import load
    from kit.models.plan import plan
    from kit.recipe import load_recipe

    recipe = load_recipe(RECIPE, VARIANTS[variant])
    p = plan(recipe)
    model, tok = load(recipe, p, seed=0)
    result = {"weights": p.weights, "weight_mib": round(_weight_bytes(model) / 2**20, 1)}
    tok.padding_side = "left"
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in PROMPTS]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    kinds = ["kit"] + (["packed"] if p.load_in_4bit else [])
    model.eval()
    for kind in kinds:
        if kind == "packed":  # bitsandbytes' default on an AVX512-BF16 CPU: repack at the first eval forward
            from bitsandbytes.functional import has_avx512bf16
            from bitsandbytes.nn import Linear4bit

            if not has_avx512bf16():
                continue
            for m in model.modules():
                if isinstance(m, Linear4bit):
                    m.support_avx512bf16_for_cpu = True
        with torch.no_grad():
            model.generate(**batch, max_new_tokens=4, do_sample=False)  # warm-up (and the repack, if any)
            t0 = time.perf_counter()
            model.generate(**batch, max_new_tokens=64, min_new_tokens=64, do_sample=False)
        result[f"generate_s_{kind}"] = round(time.perf_counter() - t0, 2)
    result["load_peak_rss_mib"] = round(_peak_rss_mib(), 1)
    return result


def _child(kind: str, variant: str, steps: int, out: str, threads: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); import benchmarks.qlora_cpu as b; "
            f"print('RESULT ' + json.dumps(b._{kind}_child({variant!r}" + (f", {steps}, {out!r}" if kind == "train"
                                                                           else "") + ")))")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{kind} {variant} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per child process")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from kit.models.catalog import model_path

    model_path("builtin:smollm2-135m")  # converted once into the cache (~30 s), before anything is timed
    results = {}
    with tempfile.TemporaryDirectory(prefix="kit-qlora-") as out:
        for variant in args.variants:
            t0 = time.time()
            results[variant] = {**_child("load", variant, args.steps, out, args.threads),
                                **_child("train", variant, args.steps, out, args.threads)}
            print(f"[bench] {variant}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"SmolLM2-135M-Instruct, GRPO G=4 x 2 questions, 64 tokens, {args.steps} steps (first dropped), "
          f"{args.threads} thread(s) per process; load average at the end {' '.join(load)}")
    print(f"{'variant':<10} {'weights':<42} {'weight MiB':>10} {'s/step':>8} {'peak RSS MiB':>12} "
          f"{'gen s':>7} {'gen s packed':>12}")
    for name, r in results.items():
        steady = r["step_s"][1:] or r["step_s"]
        print(f"{name:<10} {r['weights']:<42} {r['weight_mib']:>10.1f} {statistics.median(steady):>8.2f} "
              f"{r['peak_rss_mib']:>12.0f} {r['generate_s_kit']:>7.2f} "
              f"{r.get('generate_s_packed', float('nan')):>12.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
