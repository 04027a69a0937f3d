"""`make gpu-check`: the kit's GPU paths in one run, on random-weight architectures (nothing is downloaded).

    python scripts/gpu_check.py --out bench/gpu-check          # or: make gpu-check

On a CUDA GPU (made for a short session on one H100/H200: at most 10 minutes with the wheel
install, from a folder of wheels, .whl: see the Makefile's gpu-check target), in this order, each step in its own process (one owner of the GPU at a time):
  1. `kit fit`'s predictions for every bench below (arithmetic, no GPU)
  2. `kit bench` Unsloth 4-bit GRPO, 3 steps (step 1 compiles), Qwen2.5-0.5B; its adapter is kept
  3. eval (kit eval, 4 questions) and chat (Generator.stream) through the Unsloth model with that adapter
  4. `kit export --format merged16` of that adapter, reloaded with transformers
  5. `kit bench` TRL + PEFT bf16 on Qwen2.5-0.5B; then both for Qwen2.5-1.5B (as the budget allows)
  and `kit fit` against each measured peak (torch.cuda.max_memory_reserved(); each bench JSON holds both)
Settings are the fit anchors' (G=8 in one micro-batch, 256 completion tokens, LoRA r16, HF/Unsloth generation: no
vLLM on that machine). A step that would start after the time budget (KIT_GPU_CHECK_BUDGET_S, default 540 s) is
recorded as skipped. Writes <out>/gpu-check.json and <out>/gpu-check.md (a table); exit code 1 if a step failed.

Without CUDA it says so in one line and runs its CPU half (exit 0): kit fit's predictions for the GPU steps on an
H200, then steps 2-4 through the transformers backend on CPU, on a 1-layer copy of Qwen2.5-0.5B (real
vocabulary): the same code path with CPU-sized numbers, which say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "UNSLOTH_DISABLE_STATISTICS": "1", "PYTHONUNBUFFERED": "1"}
ANCHOR = ["grpo.num_generations=8", "grpo.per_device_train_batch_size=8", "grpo.gradient_accumulation_steps=1",
          "grpo.max_completion_length=256", "model.max_seq_length=512", "model.lora_rank=16", "model.lora_alpha=16",
          "model.fast_inference=false"]
TRL_BF16 = ["model.backend=transformers", "model.load_in_4bit=false"]
MODELS = ("qwen2.5-0.5b", "qwen2.5-1.5b")
H200_GIB = 139.8  # what CUDA reports for the lent H200 (~139 GiB)
CPU_SMALL = dict(num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16)
CPU_SETTINGS = ["grpo.num_generations=2", "grpo.per_device_train_batch_size=2", "grpo.max_completion_length=16",
                "model.max_seq_length=272", "model.lora_rank=16", "model.lora_alpha=16"]


def _cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    return True, torch.cuda.get_device_name(0)


def _kit(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, **OFFLINE, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _tagged_line(proc: subprocess.CompletedProcess, tag: str, what: str) -> str:
    """The child's stdout line that starts with `tag`; a RuntimeError with its output when it failed or printed none."""
    line = next((x for x in proc.stdout.splitlines() if x.startswith(tag + " ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{what}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}")
    return line


def _bench(recipe: str, overrides: list[str], out: Path, keep: Path | None, arch: dict | None, timeout: float):
    """kit bench in a child process (its own children train and generate); returns its JSON."""
    code = ("import json, sys; from kit.tools import bench; a = json.loads(sys.argv[1]); "
            "bench.run(a['recipe'], steps=3, overrides=a['overrides'], out=a['out'], arch_overrides=a['arch'], "
            "keep_run=a['keep'], gen_prompts=1)")
    args = {"recipe": str(ROOT / "recipes" / f"{recipe}.yaml"), "overrides": overrides, "out": str(out),
            "arch": arch, "keep": str(keep) if keep else None}
    proc = _kit("-c", code, json.dumps(args), timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kit bench exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}")
    return json.loads(out.read_text())


def _bench_row(result: dict) -> dict:
    mem, est = result.get("memory") or {}, result.get("estimate") or {}
    row = {"backend": result["backend"], "4bit": result["load_in_4bit"], "dtype": result["dtype"],
           "first_step_s": result["first_step_s"], "steady_step_s": result["steady_step_s"],
           "rollout_tokens_per_s": result["rollout_tokens_per_s"],
           "generation_tokens_per_s": result["generation"]["tokens_per_s"],
           "generation_engine": result["generation"]["backend"],
           "torch_max_reserved_gib": mem.get("torch_max_reserved_gib"),
           "device_peak_used_gib": mem.get("device_peak_used_gib"),
           "fit_reserved_gib": round(est["reserved_gb"], 3) if est else None}
    if row["torch_max_reserved_gib"] and row["fit_reserved_gib"]:
        row["fit_error"] = round(row["fit_reserved_gib"] / row["torch_max_reserved_gib"] - 1, 3)
    return row


def _nudge_adapter(run: Path) -> int:
    """Random weights earn no reward, so GRPO's advantages are 0 and LoRA's B matrices stay exactly zero; kit export
    rightly refuses such an adapter. Give B small random values (seed 0) so merge, eval and chat have an update to
    carry. Returns the number of B matrices changed (0 when training already moved them)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = run / "adapter" / "adapter_model.safetensors"
    weights = load_file(str(path))
    if any(t.count_nonzero() for n, t in weights.items() if ".lora_B." in n):
        return 0
    gen = torch.Generator().manual_seed(0)
    changed = 0
    for name, t in weights.items():
        if ".lora_B." in name:
            weights[name] = (torch.randn(t.shape, generator=gen) * 1e-3).to(t.dtype)
            changed += 1
    save_file(weights, str(path), metadata={"format": "pt"})
    return changed


def _eval_and_chat(run: Path, timeout: float) -> dict:
    nudged = _nudge_adapter(run)
    proc = _kit("-m", "kit", "eval", str(run), "--limit", "4", timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kit eval exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}")
    summary = json.loads((run / "eval" / "trained-test.json").read_text())
    engine = next((line.split("answers from ", 1)[1] for line in (proc.stdout + proc.stderr).splitlines()
                   if "answers from " in line), None)
    code = ("import sys, time; from pathlib import Path; from kit import runs; from kit.recipe import load_recipe; "
            "from kit.models.loading import load_for_inference; from kit.models.engines import Generator; "
            "run = Path(sys.argv[1]); r = load_recipe(run / runs.RECIPE); "
            "_, _, e = load_for_inference(r, runs.latest_adapter(run)); g = Generator(e); t0 = time.time(); "
            "parts = list(g.stream([{'role': 'user', 'content': 'What is 12 + 30?'}], 24)); "
            "print('CHAT', len(parts), round(time.time() - t0, 2), repr(parts[-1][:80]))")
    _, pieces, seconds, text = _tagged_line(_kit("-c", code, str(run), timeout=timeout), "CHAT",
                                            "chat").split(" ", 3)
    return {"adapter_b_nudged": nudged, "eval_n": summary["n"], "eval_seconds": summary["seconds"],
            "eval_engine": engine,
            "chat_stream_pieces": int(pieces), "chat_seconds": float(seconds), "chat_text": text}


def _export(run: Path, out: Path, timeout: float) -> dict:
    proc = _kit("-m", "kit", "export", str(run), "--format", "merged16", "--out", str(out), timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kit export exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}")
    code = ("import sys; from transformers import AutoModelForCausalLM; "
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); "
            "print('LOADED', sum(p.numel() for p in m.parameters()), str(next(m.parameters()).dtype))")
    _, params, dtype = _tagged_line(_kit("-c", code, str(out), timeout=timeout), "LOADED",
                                    "reloading the merged model").split()
    return {"files": sorted(p.name for p in out.iterdir()), "params": int(params), "dtype": dtype}


def _predictions(gpu_gb: float) -> dict:
    """kit fit's estimate for each GPU bench step on a GPU of gpu_gb GiB (no GPU needed)."""
    from kit.models import fit
    from kit.models.plan import Hardware, Plan
    from kit.recipe import load_recipe

    hw = Hardware(cuda=True, name=f"{gpu_gb:g} GiB GPU", capability=(9, 0), total_gb=gpu_gb)
    out = {}
    for model in MODELS:
        for label, extra, plan in (("unsloth-4bit", [], Plan("unsloth", True, False, "bfloat16", "adamw_8bit", hw)),
                                   ("trl-peft-bf16", TRL_BF16,
                                    Plan("transformers", False, False, "bfloat16", "adamw_8bit", hw))):
            est = fit.estimate(load_recipe(ROOT / "recipes" / f"{model}.yaml", ANCHOR + extra), plan=plan)
            out[f"{model} {label}"] = {"fit_reserved_gib": round(est.reserved_gb, 3), "fit_total_gib": est.total_gb,
                                       "phase": est.phase}
    return out


def _table(report: dict) -> str:
    lines = [f"# gpu-check: {report['device']} ({report['date']})", "",
             f"cuda: {report['cuda']}; total {report['seconds']:.0f} s; versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v), "",
             "| step | status | seconds | details |", "|---|---|---|---|"]
    for name, step in report["steps"].items():
        details = {k: v for k, v in step.items() if k not in ("status", "seconds", "error")}
        text = step.get("error") or ", ".join(f"{k} {v}" for k, v in details.items())
        lines.append(f"| {name} | {step['status']} | {step.get('seconds', '')} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes", "vllm"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/gpu-check", help="folder for gpu-check.json / gpu-check.md")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    budget = float(os.environ.get("KIT_GPU_CHECK_BUDGET_S", "540"))
    cuda, device = _cuda()
    if not cuda:
        print(f"[gpu-check] no CUDA GPU ({device}): running the CPU half only (fit predictions for an H200, then "
              "bench, eval, chat and export of a 1-layer Qwen2.5-0.5B copy on CPU)", flush=True)
    t0 = time.time()
    report = {"kind": "gpu-check", "cuda": cuda, "device": device if cuda else "cpu",
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": _versions(), "steps": {}}
    steps: list[tuple[str, object]] = [("kit fit predictions (H200)", lambda left: _predictions(H200_GIB))]
    keep = out / "run-qwen2.5-0.5b-unsloth"
    eval_chat = ("eval + chat (adapter of the first bench)", lambda left: _eval_and_chat(keep, left))
    export = ("export merged16", lambda left: _export(keep, out / "merged16", left))
    if cuda:  # cheapest-to-lose last: the 1.5B steps run only if the budget still allows
        m0, m1 = MODELS
        steps += [(f"bench {m0} unsloth-4bit", lambda left: _bench_row(_bench(
                      m0, ANCHOR, out / f"{m0}-unsloth.json", keep, None, left))),
                  eval_chat, export,
                  (f"bench {m0} trl-peft-bf16", lambda left: _bench_row(_bench(
                      m0, ANCHOR + TRL_BF16, out / f"{m0}-trl-bf16.json", None, None, left))),
                  (f"bench {m1} unsloth-4bit", lambda left: _bench_row(_bench(
                      m1, ANCHOR, out / f"{m1}-unsloth.json", None, None, left))),
                  (f"bench {m1} trl-peft-bf16", lambda left: _bench_row(_bench(
                      m1, ANCHOR + TRL_BF16, out / f"{m1}-trl-bf16.json", None, None, left)))]
    else:
        steps += [("bench qwen2.5-0.5b transformers (CPU, 1-layer copy)", lambda left: _bench_row(_bench(
                      "qwen2.5-0.5b", CPU_SETTINGS, out / "qwen2.5-0.5b-cpu.json", keep, CPU_SMALL, left))),
                  eval_chat, export]

    failed = False
    for name, fn in steps:
        left = budget - (time.time() - t0)
        if left < 20:
            report["steps"][name] = {"status": "skipped", "error": f"time budget of {budget:.0f} s spent"}
            continue
        print(f"[gpu-check] {name} ...", flush=True)
        start = time.time()
        try:
            report["steps"][name] = {"status": "ok", **fn(left)}
        except Exception as e:  # recorded, the remaining steps still run; the exit code says it failed
            failed = True
            report["steps"][name] = {"status": "failed", "error": f"{type(e).__name__}: {str(e)[:600]}"}
            traceback.print_exc()
        report["steps"][name]["seconds"] = round(time.time() - start, 1)
        print(f"[gpu-check] {name}: {report['steps'][name]['status']} ({report['steps'][name]['seconds']} s)",
              flush=True)
    if cuda:  # each measured peak beside kit fit's prediction of it
        report["fit_vs_measured"] = {n: {"measured": s.get("torch_max_reserved_gib"),
                                         "fit": s.get("fit_reserved_gib"), "error": s.get("fit_error")}
                                     for n, s in report["steps"].items() if n.startswith("bench ")}
    report["seconds"] = round(time.time() - t0, 1)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu-check.md").write_text(_table(report))
    print(_table(report), flush=True)
    print(f"[gpu-check] wrote {out / 'gpu-check.json'} and {out / 'gpu-check.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
