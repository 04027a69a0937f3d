"""Benchmarks that download nothing: the recipe's architecture with random weights, N GRPO steps through the real
kit path, and what they cost, as JSON.

    kit bench recipes/qwen2.5-1.5b.yaml --random-weights --steps 5
    kit bench recipes/qwen2.5-3b.yaml --random-weights --set grpo.max_completion_length=256

1. The model is built from kit/models/configs/<model>.json (the published config.json) with random weights, beside a
   byte-level BPE tokenizer of exactly the model's vocabulary size (learnt on the kit's GSM8K text, padded with
   filler tokens; every id decodes, so random completions never crash decoding) and a chat template. Cached
   under $KIT_CACHE/bench/.
2. A child process runs `kit.train.train` on it (`model.name=<that folder>`, `data.source=builtin:gsm8k-sample`,
   `grpo.max_steps=N`, GRPO only): the same backend, 4-bit, vLLM and optimizer choices as a real run. It reports
   torch.cuda.max_memory_reserved(); the parent samples device memory with nvidia-smi (that includes vLLM's pool
   and the CUDA context, which PyTorch's counters don't).
3. A second child loads the trained adapter through kit.models.loading.load_for_inference and times one generation batch
   through kit.models.engines.Generator with HF generation; where the plan generates with vLLM (Unsloth's engine, or
   the in-process engine of the transformers backend) a third child times the same prompts through vLLM, and the
   result holds both and their ratio (`generation.vllm_over_hf`).

Random weights rarely emit EOS, so completions run to max_completion_length: the worst case for memory and time.
Accuracy numbers from such a run mean nothing. A CPU run is labelled `"device": "cpu"`: its numbers say the path
works, never how fast a GPU is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

from kit import runs
from kit.errors import KitError
from kit.models import catalog, fit, tiny
from kit.models.engines import Generator
from kit.models.loading import load_for_inference
from kit.models.plan import plan as plan_for
from kit.models.tiny import build_once, cache_dir
from kit.recipe import load_recipe
from kit.runs import metrics
from kit.task import data
from kit.train.flow import train

BENCH_VERSION = "v2"  # bump when the model/tokenizer built below changes: the cache is keyed by it
SPECIAL = ["<|pad|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
DEFINITIONS = {
    "step_times_s": "TRL's logged step_time per optimizer step: generation + rewards + forward/backward + update "
                    "(TRL 0.22, profile t4, logs none: the kit's wall-clock time of the step, kit.models.compat)",
    "first_step_s": "step 1 alone: includes Unsloth's kernel compilation (minutes) and vLLM/CUDA warm-up",
    "steady_step_s": "median step_time of steps 2..N",
    "rollout_tokens_per_s": "completion tokens per step (completions/mean_length x completions per step) / "
                            "steady_step_s: end-to-end, training included",
    "generation.tokens_per_s": "completion tokens of one timed Generator.generate call (num_generations samples "
                               "per prompt, max_new_tokens = max_completion_length, after a short warm-up) / its "
                               "wall time. Each completion counts max_new_tokens: random weights emit EOS with "
                               "probability ~1/vocab per token (the training run's completions/clipped_ratio, "
                               "counted by TRL, is recorded as clipped_ratio)",
    "generation.vllm_over_hf": "where the plan generates with vLLM: the same prompts, samples and lengths through "
                               "HF generation (generation.hf) and vLLM (generation.vllm), each in a fresh process "
                               "after its own warm-up; vLLM tokens/s / HF tokens/s",
    "memory.torch_max_reserved_gib": "torch.cuda.max_memory_reserved() in the training process: PyTorch's caching "
                                     "allocator only (the anchors are this number)",
    "memory.device_peak_used_gib": "highest memory.used nvidia-smi reported for the GPU while training, sampled "
                                   "every 0.5 s: all processes, vLLM's pool and CUDA contexts included",
}


# ---------------------------------------------------------------------------------------------------------------
# A random-weight copy of the architecture


def model_config(recipe, arch_overrides: dict | None = None) -> tuple[dict, Path]:
    """The published config of the recipe's model (plus overrides, e.g. fewer layers for a test)."""
    path = catalog.config_path(recipe.model.name)
    if path is None or recipe.model.name == "builtin:tiny":
        raise KitError(f"model.name: no config for {recipe.model.name!r} in kit/models/configs/, so its architecture can't "
                       "be built without a download; benchmark a recipe whose model ships one "
                       f"({', '.join(sorted(p.stem for p in catalog.CONFIGS.glob('*.json')))})")
    cfg = json.loads(path.read_text())
    cfg.update(arch_overrides or {})
    return cfg, path


def build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer with exactly `vocab_size` ids: special tokens, BPE pieces learnt from the kit's
    GSM8K text (so prompts have realistic lengths), then filler tokens up to the model's vocabulary size. Every id
    decodes to plain text, so decoding random ids never fails. Qwen2's tokenizer class rebuilds it from the same
    vocabulary and merges; the others load it as saved."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = tiny.train_bpe(min(vocab_size, 4096), SPECIAL)
    learnt = json.loads(tok.to_str())["model"]
    vocab, merges = dict(learnt["vocab"]), [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                            for m in learnt["merges"]]
    for i in range(len(vocab), vocab_size):
        vocab[f"\u0120w{i}"] = i  # "Ġw123" decodes to " w123"; no merge produces it, so encoding never does
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>",
                                        unk_token="<|unk|>")
    tokenizer.chat_template = tiny.CHAT_TEMPLATE  # the same turn layout
    return tokenizer


def build_random_model(recipe, arch_overrides: dict | None = None) -> Path:
    """Folder with the recipe's architecture (random weights, seed 0) and the bench tokenizer; built once."""
    cfg, source = model_config(recipe, arch_overrides)
    key = hashlib.sha256(json.dumps([BENCH_VERSION, cfg], sort_keys=True).encode()).hexdigest()[:12]

    def build_into(folder: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        tokenizer = build_tokenizer(cfg["vocab_size"])
        tokenizer.save_pretrained(folder)
        ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
        config = AutoConfig.for_model(**dict(cfg, **ids))
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(cfg.get("torch_dtype")),
                                                                           torch.bfloat16)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = None
        model.save_pretrained(folder)
        (folder / "RANDOM_WEIGHTS.json").write_text(json.dumps({
            "note": "random weights for benchmarks: memory and speed are real, accuracy is not",
            "architecture_from": f"kit/models/configs/{source.name}" if source.parent == catalog.CONFIGS else str(source),
            "overrides": arch_overrides or {}}, indent=2))

    return build_once(cache_dir() / "bench" / f"{source.stem}-{key}", build_into)


# ---------------------------------------------------------------------------------------------------------------
# The benchmark


def run(recipe_path: str | Path, steps: int = 3, overrides: list[str] = (), out: str | Path | None = None,
        arch_overrides: dict | None = None, gen_prompts: int = 2, keep_run: str | Path | None = None) -> dict:
    """Benchmark a recipe on random weights and write the JSON result (returned too). `keep_run`: copy the
    benchmark's run folder there (its adapter, for checks that evaluate or export it)."""
    if steps < 1:
        raise KitError(f"--steps: {steps} is not a number of steps; give 1 or more (2+ separates compile time)")
    recipe = load_recipe(recipe_path, overrides)
    folder = build_random_model(recipe, arch_overrides)

    # The same overrides the training child gets, so the plan, the estimate and the run agree.
    bench_overrides = list(overrides) + [
        f"model.name={folder}", "data.source=builtin:gsm8k-sample", "data.limit=null", f"grpo.max_steps={steps}",
        "grpo.save_steps=1000000", "grpo.logging_steps=1", "grpo.completions_every=0", "eval.every_steps=0",
        "sft.enabled=false", "stages=[]"]
    bench_recipe = load_recipe(recipe_path, bench_overrides)
    plan = plan_for(bench_recipe)
    cuda = plan.hardware.cuda
    out = Path(out) if out else Path("bench") / f"{Path(recipe_path).stem}-{plan.backend}.json"
    workdir = Path(tempfile.mkdtemp(prefix="kit-bench-"))
    try:
        bench_overrides.append(f"run.output_dir={workdir / 'runs'}")
        print(f"[kit] bench: {recipe.model.name} architecture, random weights ({folder}); {steps} GRPO steps, "
              f"backend {plan.backend}, {plan.weights}, "
              f"{'vLLM' if plan.fast_inference else 'HF'} generation, on {plan.hardware.name}", flush=True)
        sampler = _DeviceMemorySampler() if cuda else None
        with sampler or contextlib.nullcontext():
            trained = _child("train", {"recipe": str(recipe_path), "overrides": bench_overrides}, workdir)
        run_dir = Path(trained["run"])
        # The same prompts through HF generation and (where the plan has it) vLLM, each in a fresh process.
        engines = ["hf", "vllm"] if plan.fast_inference else ["hf"]
        generations = {e: _child("generate", {"recipe": str(recipe_path), "overrides": bench_overrides,
                                              "adapter": str(run_dir / runs.ADAPTER), "prompts": gen_prompts,
                                              "engine": e}, workdir) for e in engines}
        generation = dict(generations[engines[-1]])  # the engine the plan generates with
        if "vllm" in generations:
            generation["hf"], generation["vllm"] = generations["hf"], generations["vllm"]
            generation["vllm_over_hf"] = round(generations["vllm"]["tokens_per_s"]
                                               / generations["hf"]["tokens_per_s"], 2)
        result = _result(recipe_path, recipe, bench_recipe, plan, folder, arch_overrides, steps, run_dir, trained,
                         generation, sampler)
        if keep_run is not None:
            shutil.copytree(run_dir, keep_run, dirs_exist_ok=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print_summary(result, out)
    return result


def _result(recipe_path, recipe, bench_recipe, plan, folder, arch_overrides, steps, run_dir, trained, generation,
            sampler) -> dict:
    g = bench_recipe.grpo
    records = [r for r in metrics.read_jsonl(run_dir / runs.METRICS) if "step_time" in r]
    per_step = g.per_device_train_batch_size * g.gradient_accumulation_steps
    step_times = [round(r["step_time"], 3) for r in records]
    tokens = [round(r.get("completions/mean_length", 0.0) * per_step, 1) for r in records]
    steady = statistics.median(step_times[1:]) if len(step_times) > 1 else None
    steady_tokens = statistics.median(tokens[1:]) if len(tokens) > 1 else None
    clipped = [r["completions/clipped_ratio"] for r in records if "completions/clipped_ratio" in r]
    generation = dict(generation, clipped_ratio=round(sum(clipped) / len(clipped), 3) if clipped else None)
    est = fit.estimate(bench_recipe, plan=plan) if plan.hardware.cuda else fit.estimate(recipe)
    cfg = json.loads((folder / "config.json").read_text())
    memory = None
    if plan.hardware.cuda:
        memory = {"torch_max_reserved_gib": trained["max_reserved_gib"],
                  "torch_max_allocated_gib": trained["max_allocated_gib"],
                  "device_peak_used_gib": sampler.peak_gib if sampler else None,
                  "gpu_total_gib": round(plan.hardware.total_gb, 2)}
    return {
        "kind": "kit bench", "random_weights": True,
        "recipe": Path(recipe_path).stem, "recipe_path": str(recipe_path), "model": recipe.model.name,
        "architecture": {k: cfg.get(k) for k in ("model_type", "hidden_size", "intermediate_size",
                                                 "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                                 "vocab_size")},
        "architecture_overrides": arch_overrides or {},
        "device": plan.hardware.name if plan.hardware.cuda else "cpu",
        "cuda": plan.hardware.cuda,
        "backend": plan.backend, "load_in_4bit": plan.load_in_4bit, "fast_inference": plan.fast_inference,
        "dtype": plan.dtype, "optim": plan.optim, "plan_notes": list(plan.notes),
        "versions": _versions(),
        "grpo": {"num_generations": g.num_generations, "per_device_train_batch_size": g.per_device_train_batch_size,
                 "gradient_accumulation_steps": g.gradient_accumulation_steps,
                 "max_prompt_length": g.max_prompt_length, "max_completion_length": g.max_completion_length,
                 "lora_rank": bench_recipe.model.lora_rank},
        "steps": steps, "step_times_s": step_times, "first_step_s": step_times[0] if step_times else None,
        "steady_step_s": steady, "completion_tokens_per_step": tokens,
        "rollout_tokens_per_s": round(steady_tokens / steady, 1) if steady and steady_tokens else None,
        "generation": generation,
        "memory": memory,
        "estimate": None if est is None else {
            "for": (f"this GPU ({est.gpu_name}, {est.gpu_gb:.1f} GiB)" if plan.hardware.cuda else
                    f"the recipe as written on a 16 GB GPU ({est.gpu_gb} GiB), not this CPU run"),
            "total_gb": est.total_gb, "reserved_gb": round(est.reserved_gb, 3), "phase": est.phase,
            "phases": est.phases, "setup": est.setup, "terms": [[n, round(v, 3)] for n, v in est.terms]},
        "definitions": DEFINITIONS,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _print_summary(result: dict, out: Path) -> None:
    where = result["device"] if result["cuda"] else "cpu (not a GPU result)"
    gen = result["generation"]
    vs = (f" (HF {gen['hf']['tokens_per_s']}, vLLM {gen['vllm']['tokens_per_s']}: {gen['vllm_over_hf']}x)"
          if "vllm_over_hf" in gen else "")
    print(f"[kit] bench on {where}: step 1 {result['first_step_s']} s, steady {result['steady_step_s']} s/step, "
          f"generation {gen['tokens_per_s']} tokens/s{vs}", flush=True)
    if result["memory"]:
        m, e = result["memory"], result["estimate"]
        print(f"[kit] peak: torch reserved {m['torch_max_reserved_gib']} GiB, device {m['device_peak_used_gib']} GiB; "
              f"estimate {e['total_gb'] if e else '-'} GiB", flush=True)
    print(f"[kit] wrote {out}", flush=True)


def _versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo",
                 "vllm", "triton"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


# ---------------------------------------------------------------------------------------------------------------
# Child processes: the GPU has one owner at a time, and each measurement starts from an empty device.


def _child(mode: str, args: dict, workdir: Path) -> dict:
    result_file = workdir / f"{mode}.json"
    cmd = [sys.executable, "-m", "kit.tools.bench", mode, json.dumps(args), str(result_file)]
    proc = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0 or not result_file.is_file():
        raise KitError(f"bench: the {mode} step failed (exit code {proc.returncode}); its output is above")
    return json.loads(result_file.read_text())


def _train_child(args: dict) -> dict:
    cuda = False
    try:
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass
    run_dir = train(args["recipe"], args["overrides"])
    out = {"run": str(run_dir)}
    if cuda:
        import torch

        out.update(max_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 3),
                   max_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3))
    return out


def _generate_child(args: dict) -> dict:
    recipe = load_recipe(args["recipe"], args["overrides"])
    g = recipe.grpo
    p = plan_for(recipe)
    if args.get("engine", "hf") == "hf":
        p = dataclasses.replace(p, fast_inference=False)
    _, _, engine = load_for_inference(recipe, Path(args["adapter"]), p)
    gen = Generator(engine)
    rows = data.questions("builtin:gsm8k-sample", "test", args["prompts"], g.seed, recipe.data.subset)
    prompts = [data.to_prompt(r["question"], recipe.data.system_prompt) for r in rows]
    gen.generate(prompts[:1], 8, temperature=g.temperature, top_p=g.top_p, n=1)  # warm-up: graphs, kernels
    t0 = time.perf_counter()
    outs = gen.generate(prompts, g.max_completion_length, temperature=g.temperature, top_p=g.top_p,
                        n=g.num_generations, batch_size=len(prompts))
    seconds = time.perf_counter() - t0
    tokens = sum(len(per) for per in outs) * g.max_completion_length
    return {"backend": gen.engine_name, "prompts": len(prompts),
            "samples_per_prompt": g.num_generations, "max_new_tokens": g.max_completion_length,
            "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


class _DeviceMemorySampler:
    """Highest memory.used of GPU 0 while the block runs, from nvidia-smi (no CUDA context in this process)."""

    def __init__(self, every: float = 0.5):
        self.every, self.peak_gib = every, None
        self._stop = threading.Event()
        self._cmd = shutil.which("nvidia-smi")
        index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
        self._index = index if re.fullmatch(r"\d+", index) else "0"

    def _poll(self):
        while not self._stop.is_set():
            try:
                text = subprocess.run([self._cmd, "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                       "-i", self._index], capture_output=True, text=True, timeout=10).stdout
                mib = float(text.strip().splitlines()[0])
                self.peak_gib = round(max(self.peak_gib or 0.0, mib / 1024), 3)
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass  # a missed sample only lowers the observed peak; the torch number stays exact
            self._stop.wait(self.every)

    def __enter__(self):
        if self._cmd:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._cmd:
            self._thread.join(timeout=15)
        return False


# ---------------------------------------------------------------------------------------------------------------
# CLI


def cli(args) -> int:
    if not args.random_weights:
        raise KitError("kit bench needs --random-weights: benchmarks never download weights; they build the "
                       "recipe's architecture from kit/models/configs/ with random weights (memory and speed are real, "
                       "accuracy is not)")
    run(args.recipe, args.steps, args.overrides or [], args.out)
    return 0


if __name__ == "__main__":  # the child processes of run(): python -m kit.tools.bench MODE ARGS_JSON RESULT_FILE
    _mode, _args, _result_file = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    _out = {"train": _train_child, "generate": _generate_child}[_mode](_args)
    Path(_result_file).write_text(json.dumps(_out))
