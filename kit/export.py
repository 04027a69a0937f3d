"""Export a run's model: the LoRA adapter as it is, merged into the base in 16-bit, or GGUF for llama.cpp/Ollama.

    kit export runs/qwen2.5-1.5b-20261122-101500                        # lora (default)
    kit export runs/qwen2.5-1.5b-20261122-101500 --format merged16      # a standalone float16 model
    kit export runs/qwen2.5-1.5b-20261122-101500 --format gguf --quantization q4_k_m

Every format first checks the adapter is not all zeros: LoRA's B matrices start at zero, so an adapter saved
before the first optimizer step changes nothing and exporting it would only hide that. merged16 loads the base in
16-bit (never the 4-bit copy used for training) and merges there; with Unsloth it uses
`save_pretrained_merged(save_method="merged_16bit")`. gguf is Unsloth's `save_pretrained_gguf`, which downloads
and builds llama.cpp the first time: it needs Unsloth, a CUDA GPU, a compiler and internet.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

from kit import runs
from kit.recipe import KitError, load_recipe

FORMATS = ("lora", "merged16", "gguf")


def check_adapter(adapter: Path) -> dict:
    """Counts of the adapter's tensors; a KitError when the LoRA update is exactly zero (untrained)."""
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise KitError(f"{adapter}: no adapter_model.safetensors; is the run finished? (kit show {adapter.parent})")
    from safetensors import safe_open

    lora_b, nonzero_b, other = 0, 0, 0
    with safe_open(str(weights), framework="pt") as f:
        for name in f.keys():
            if ".lora_B." in name:
                lora_b += 1
                nonzero_b += bool(f.get_tensor(name).count_nonzero())
            elif ".lora_A." not in name:
                other += 1  # modules_to_save: trained in full
    if lora_b and not nonzero_b and not other:
        raise KitError(f"{adapter}: the adapter is all zeros (every LoRA B matrix is 0, as before the first training "
                       "step), so it would export the base model unchanged; train the run further first")
    return {"lora_B": lora_b, "lora_B_nonzero": nonzero_b, "full_modules": other}


def export(run: str | Path, fmt: str = "lora", out: str | Path | None = None, quantization: str = "q4_k_m") -> Path:
    """Export the newest adapter of `run` in format `fmt` to `out` (default RUN/export-<fmt>); returns `out`."""
    if fmt not in FORMATS:
        raise KitError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    run = runs.open_run(run)
    adapter = runs.latest_adapter(run)
    if adapter is None:
        raise KitError(f"{run} has no adapter yet (it is saved at the end of each stage); wait for the run or "
                       f"continue it with kit train --resume {run}")
    counts = check_adapter(adapter)
    recipe = load_recipe(run / runs.RECIPE)
    out = Path(out) if out else run / f"export-{fmt}"
    if out.exists() and any(out.iterdir()):
        raise KitError(f"{out} already exists and is not empty; remove it or give another --out")
    if fmt == "gguf" and not re.fullmatch(r"[a-z0-9_]+", quantization.lower()):
        raise KitError(f"--quantization: {quantization!r} is not a GGUF quantization name (e.g. q4_k_m, q8_0, f16)")
    if fmt == "lora":
        _export_lora(adapter, out)
    elif fmt == "merged16":
        _export_merged16(recipe, adapter, out)
    else:
        _export_gguf(recipe, adapter, out, quantization.lower())
    (out / "export.json").write_text(json.dumps({
        "format": fmt, "run": str(run), "adapter": str(adapter), "base_model": recipe.model.name,
        "recipe": recipe.run.name, "quantization": quantization.lower() if fmt == "gguf" else None,
        "adapter_tensors": counts}, indent=2) + "\n")
    shutil.copy(run / runs.RECIPE, out / "recipe.yaml")
    _write_readme(out, fmt, recipe, run, quantization)
    print(f"[kit] exported {fmt} to {out}", flush=True)
    return out


def _export_lora(adapter: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in adapter.iterdir():
        if item.is_file():
            shutil.copy(item, out / item.name)


def _inference_plan(recipe):
    """Merging wants the 16-bit base, no vLLM: a plan for this machine with those two changed."""
    from kit import model as kit_model

    plan = kit_model.plan(recipe)
    dtype = plan.dtype if plan.hardware.cuda else "float32"  # CPU: merge in fp32, save in fp16
    return dataclasses.replace(plan, load_in_4bit=False, fast_inference=False, dtype=dtype)


def _export_merged16(recipe, adapter: Path, out: Path) -> None:
    import torch

    from kit import model as kit_model

    plan = _inference_plan(recipe)
    model, tokenizer, _ = kit_model.load_for_inference(recipe, adapter, plan)
    out.mkdir(parents=True, exist_ok=True)
    if plan.backend == "unsloth":
        model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
        return
    merged = model.merge_and_unload().to(torch.float16)
    merged.config.dtype = torch.float16
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _export_gguf(recipe, adapter: Path, out: Path, quantization: str) -> None:
    from kit import model as kit_model

    plan = kit_model.plan(recipe)
    if plan.backend != "unsloth":
        why = "no CUDA GPU here" if not plan.hardware.cuda else "unsloth is not installed (pip install -e '.[gpu]')"
        raise KitError(f"--format gguf: GGUF export runs through Unsloth on a CUDA GPU ({why}); alternatively export "
                       "--format merged16 and convert it with llama.cpp's convert_hf_to_gguf.py")
    model, tokenizer, _ = kit_model.load_for_inference(recipe, adapter, dataclasses.replace(plan, fast_inference=False))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained_gguf(str(out), tokenizer, quantization_method=quantization)


def _write_readme(out: Path, fmt: str, recipe, run: Path, quantization: str) -> None:
    base = recipe.model.name
    how = {
        "lora": (f"A LoRA adapter for `{base}`. Load it with PEFT:\n\n```python\n"
                 "from peft import AutoPeftModelForCausalLM\n"
                 f"model = AutoPeftModelForCausalLM.from_pretrained(\"{out.name}\")\n```\n\n"
                 "or serve it with vLLM (`--enable-lora --lora-modules grpo=" + out.name + "`)."),
        "merged16": (f"`{base}` with the adapter merged in, saved in float16: a standalone model for "
                     "transformers, vLLM or a GGUF conversion."),
        "gguf": f"`{base}` with the adapter merged in, converted to GGUF ({quantization}) for llama.cpp / Ollama.",
    }[fmt]
    text = (f"# {recipe.run.name}: GRPO on GSM8K ({fmt})\n\n{how}\n\n"
            f"- base model: `{base}`\n"
            f"- trained by: grpo-kit recipe `{recipe.run.name}` (recipe.yaml beside this file)\n"
            f"- run folder: `{run}`\n\nPrompts use the recipe's system prompt and expect the answer as\n"
            "`<reasoning>...</reasoning><answer>...</answer>`.\n")
    (out / "README.md").write_text(text)


def cli(args) -> int:
    export(args.run, args.format, args.out, args.quantization)
    return 0
