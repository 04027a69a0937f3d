"""Speed on the real model (SmolLM2-135M-Instruct, builtin:smollm2-135m) on this machine's CPU: prints numbers,
asserts nothing. Results go to docs/benchmarks.md by hand, with the date and how busy the machine was.

    python benchmarks/real_model.py grpo            # the kit vs a plain TRL GRPOTrainer script, same work
    python benchmarks/real_model.py generation      # HF generate vs the CPU vLLM build, tokens/s
    python benchmarks/real_model.py steps RUN       # GRPO seconds per step of a finished run (e.g. smollm2-cpu)

`generation` needs vllm: run it with the CPU-vLLM venv's python (.venv-vllm/bin/python, `make test-vllm` makes
it) or pass --vllm-python. Each measurement runs in its own process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def model_folder() -> str:
    from kit.models.catalog import model_path

    return model_path("builtin:smollm2-135m")


def grpo(args) -> None:
    """Same work in both: the base model (no warm-up), G answers to one question per step, `completion` tokens,
    LoRA r16 on every linear layer, lr 1e-5, `steps` steps, no checkpoints, no evaluation."""
    folder = model_folder()
    out = Path(tempfile.mkdtemp(prefix="kit-vs-trl-"))
    sets = ["sft.enabled=false", f"grpo.max_steps={args.steps}", f"grpo.num_generations={args.generations}",
            f"grpo.per_device_train_batch_size={args.generations}", f"grpo.max_completion_length={args.completion}",
            "grpo.learning_rate=1e-5", "grpo.save_steps=100000", "eval.every_steps=0", f"run.output_dir={out}"]
    cmd = [sys.executable, "-m", "kit", "train", str(ROOT / "recipes" / "smollm2-cpu.yaml"),
           *[a for s in sets for a in ("--set", s)]]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    kit_wall = time.time() - t0
    kit_train = float(re.findall(r"done: \d+ steps in (\d+) s", proc.stdout + proc.stderr)[-1])
    t0 = time.time()
    plain = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plain_trl_grpo.py"), folder, "--steps",
                            str(args.steps), "--generations", str(args.generations), "--completion",
                            str(args.completion)], capture_output=True, text=True, check=True)
    plain_wall = time.time() - t0
    p = json.loads(next(line for line in plain.stdout.splitlines() if line.startswith("PLAIN "))[6:])
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    lengths = [r["completions/mean_length"] for r in map(json.loads, (run / "metrics.jsonl").open())
               if "completions/mean_length" in r]
    print(f"GRPO, {args.steps} steps, G={args.generations}, 1 question per step, {args.completion} completion "
          f"tokens (kit mean completion {statistics.mean(lengths):.1f} tokens)")
    print(f"kit       training {kit_train:.0f} s ({kit_train / args.steps:.1f} s/step)   wall {kit_wall:.0f} s")
    print(f"plain TRL training {p['train_s']:.0f} s ({p['train_s'] / args.steps:.1f} s/step)   wall {plain_wall:.0f} s")
    print(f"ratio kit / plain: training {kit_train / p['train_s']:.2f}, wall {kit_wall / plain_wall:.2f}")


PROMPTS = ["What is 2+2? Give only the number.", "Name three colours.", "Write a haiku about the sea.",
           "Explain what a prime number is.", "Ava has 3 apples and gets 4 more. How many apples does she have?",
           "What is the capital of France?", "Give me a tip for learning to code.", "Describe a cat in one sentence."]


def _generation_one(engine: str, n: int, tokens: int) -> None:
    """In this process: one warm-up call, then one timed call, every answer exactly `tokens` long (EOS ignored)."""
    from transformers import AutoTokenizer

    folder = model_folder()
    tok = AutoTokenizer.from_pretrained(folder)
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in PROMPTS]
    if engine == "hf":
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)

        def call(k):
            with torch.no_grad():
                model.generate(**enc, do_sample=True, num_return_sequences=n, max_new_tokens=k, min_new_tokens=k,
                               pad_token_id=tok.pad_token_id)
        label = "HF generate (fp32, batch of all prompts x n)"
    else:
        from vllm import LLM, SamplingParams

        from kit.models.engines import vllm_environment
        from kit.models.plan import Hardware

        vllm_environment(Hardware(cuda=False))
        llm = LLM(model=folder, dtype="bfloat16", max_model_len=512, seed=0)
        ids = [{"prompt_token_ids": tok(t, add_special_tokens=False)["input_ids"]} for t in texts]

        def call(k):
            llm.generate(ids, SamplingParams(n=n, max_tokens=k, ignore_eos=True, temperature=1.0), use_tqdm=False)
        label = "vLLM CPU build (bf16)"
    call(4)
    t0 = time.time()
    call(tokens)
    seconds = time.time() - t0
    total = len(PROMPTS) * n * tokens
    print("GEN " + json.dumps({"engine": label, "tokens": total, "seconds": round(seconds, 2),
                               "tokens_per_s": round(total / seconds, 1)}), flush=True)


def generation(args) -> None:
    results = {}
    for engine, python in (("hf", sys.executable), ("vllm", args.vllm_python or sys.executable)):
        proc = subprocess.run([python, __file__, "_generation", engine, "--n", str(args.n), "--tokens",
                               str(args.tokens)], capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("GEN ")), None)
        if line is None:
            sys.exit(f"{engine}: failed\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        results[engine] = json.loads(line[4:])
        r = results[engine]
        print(f"{r['engine']:<45} {r['tokens']} tokens in {r['seconds']:.1f} s = {r['tokens_per_s']:.0f} tok/s")
    print(f"vLLM / HF: {results['vllm']['tokens_per_s'] / results['hf']['tokens_per_s']:.2f}x  "
          f"({len(PROMPTS)} prompts x {args.n} samples x {args.tokens} tokens)")


def steps(args) -> None:
    from kit.runs import metrics

    records = metrics.read_jsonl(Path(args.run) / "metrics.jsonl")
    for stage in sorted({r["stage"] for r in records if str(r.get("stage", "")).endswith("-grpo")}):
        times = [r["step_time"] for r in records if r.get("stage") == stage and "step_time" in r]
        lengths = [r["completions/mean_length"] for r in records if r.get("stage") == stage
                   and "completions/mean_length" in r]
        print(f"{stage}: {len(times)} steps, {statistics.mean(times):.2f} s/step mean, "
              f"{statistics.median(times):.2f} median; completions {statistics.mean(lengths):.1f} tokens mean")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    g = sub.add_parser("grpo")
    g.add_argument("--steps", type=int, default=5)
    g.add_argument("--generations", type=int, default=4)
    g.add_argument("--completion", type=int, default=64)
    gen = sub.add_parser("generation")
    gen.add_argument("--n", type=int, default=4)
    gen.add_argument("--tokens", type=int, default=64)
    gen.add_argument("--vllm-python", help="python of a venv with vllm (default: this one)")
    one = sub.add_parser("_generation")
    one.add_argument("engine", choices=("hf", "vllm"))
    one.add_argument("--n", type=int, default=4)
    one.add_argument("--tokens", type=int, default=64)
    s = sub.add_parser("steps")
    s.add_argument("run")
    args = p.parse_args()
    if args.what == "_generation":
        _generation_one(args.engine, args.n, args.tokens)
    else:
        {"grpo": grpo, "generation": generation, "steps": steps}[args.what](args)


if __name__ == "__main__":
    main()
