"""`kit doctor [RECIPE]`: one screen to paste into an issue — Python, torch and its CUDA build, the GPU, the versions
of the training stack, the install profile this matches, known-bad combinations with the command that fixes each,
and with a recipe what `plan()` would run here and `kit fit`'s verdict.

    kit doctor
    kit doctor recipes/qwen2.5-1.5b.yaml

Fast and read-only: no model is loaded, nothing is downloaded. Exit code 0 even when things are missing (that is
what it reports); only a recipe that cannot be read is an error.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys

from kit.errors import KitError
from kit.models import compat, fit
from kit.models.plan import detect_hardware
from kit.models.plan import plan as make_plan
from kit.models.stopping import describe_model
from kit.recipe import load_recipe

# Distributions whose versions decide whether a run works (compat.version finds vLLM under either of its names).
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "unsloth", "unsloth_zoo", "vllm",
            "bitsandbytes", "xformers", "triton", "gradio", "tensorboard")
TORCH_RANGE = ((2, 6), (2, 15))  # >=2.6,<2.15 (Unsloth's bound)


def _release(text: str | None) -> tuple[int, ...]:
    """(2, 11, 0) from '2.11.0+cu130'."""
    return tuple(int(x) for x in re.findall(r"\d+", (text or "").split("+")[0])[:3])


def _driver() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def facts() -> dict:
    """Everything the report shows, as plain data (tests read it)."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "versions": {},
            "torch_cuda": None, "gpu": None, "driver": _driver()}
    for name in PACKAGES:
        info["versions"][name] = compat.version(name)
    if info["versions"]["torch"]:
        try:
            import torch
        except Exception as e:  # a broken install is a finding, not a crash
            info["torch_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        else:
            info["torch_cuda"] = torch.version.cuda
            if torch.cuda.is_available():
                hw = detect_hardware()
                info["gpu"] = {"name": hw.name, "total_gb": round(hw.total_gb, 1), "capability": hw.capability,
                               "bf16": hw.bf16, "count": torch.cuda.device_count()}
            if info["versions"]["bitsandbytes"]:
                info["bnb_backend"] = _bnb_backend()
    info["profile"] = profile(info)
    info["problems"] = problems(info)
    return info


def _bnb_backend() -> str | None:
    """The native library bitsandbytes loads here ("CPU", "CUDA", ...; None: none), as kit.models.plan.bnb_backend
    finds it, asked of a child process: importing bitsandbytes registers its torch kernels, and the doctor's own
    process holds nothing of the training stack."""
    code = "from kit.models.plan import bnb_backend; print('BNB', bnb_backend())"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("BNB ")]
    return found[0] if found and found[0] != "None" else None


def _tested(info: dict) -> str | None:
    """The tested profile these packages are (kit.models.compat names it: the one place that compares versions)."""
    name = compat.profile_of(info["versions"])
    return name if name in compat.PROFILES else None


def profile(info: dict) -> str:
    """The install profile (docs/install.md) these packages match, with the extras in use."""
    v, profiles, name = info["versions"], compat.PROFILES, _tested(info)
    extras = "gpu+vllm" if v["unsloth"] and v["vllm"] else "gpu" if v["unsloth"] else \
        "vllm, no unsloth" if v["vllm"] else "cpu: transformers + PEFT"
    if name is None:
        return (f"none tested (transformers {v['transformers']}, trl {v['trl']}; tested: "
                + ", ".join(f"{n} = transformers {p['transformers']} + trl {p['trl']}" for n, p in profiles.items())
                + f"), {extras}")
    return f"{name} ({extras})"


def problems(info: dict) -> list[tuple[str, str]]:
    """Known-bad combinations found here: (what is wrong, the command that fixes it)."""
    v, out = info["versions"], []
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        if v[name] is None:
            out.append((f"{name} is not installed", "pip install -e ."))

    profiles, gpu_pins, tested = compat.PROFILES, compat.GPU_PINS, _tested(info)
    if tested is None and v["transformers"] and v["trl"]:
        main = next(iter(profiles.values()))
        out.append((f"transformers {v['transformers']} with trl {v['trl']} is not a tested profile "
                    "(docs/install.md)", "pip install " + " ".join(f"{k}=={p}" for k, p in main.items())))
    for name, pin in gpu_pins.get(tested, {}).items():
        if name != "torch" and v.get(name) and v[name].split("+")[0] != pin:
            out.append((f"{name} {v[name]} with profile {tested}, which pins {pin}", f"pip install {name}=={pin}"))
    if v["torch"] and not TORCH_RANGE[0] <= _release(v["torch"])[:2] < TORCH_RANGE[1]:
        out.append((f"torch {v['torch']} is outside >=2.6,<2.15 (Unsloth's bound)", "pip install 'torch>=2.6,<2.15'"))
    if info.get("torch_error"):
        out.append((f"torch is installed but does not import: {info['torch_error']}",
                    "pip install --force-reinstall 'torch>=2.6,<2.15'"))
    if info["driver"] and v["torch"] and info["torch_cuda"] is None:
        out.append(("an NVIDIA driver is present but torch is a CPU-only build",
                    "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu128"))
    if info["driver"] and info["torch_cuda"] and _release(info["torch_cuda"])[:1] >= (13,) \
            and _release(info["driver"])[:1] < (580,):
        out.append((f"torch is built for CUDA {info['torch_cuda']}, which needs an NVIDIA driver >= 580 (found "
                    f"{info['driver']})", "pip install torch==2.9.1 --index-url https://download.pytorch.org/whl/cu128"
                    "  (or update the driver)"))
    if v["unsloth"] and v["unsloth_zoo"] and v["unsloth"] != v["unsloth_zoo"]:
        out.append((f"unsloth {v['unsloth']} with unsloth_zoo {v['unsloth_zoo']}: they are released together",
                    f"pip install unsloth_zoo=={v['unsloth']}"))
    if v["unsloth"] and not v["unsloth_zoo"]:
        out.append(("unsloth is installed without unsloth_zoo", f"pip install unsloth_zoo=={v['unsloth']}"))
    if (v["unsloth"] or v["vllm"]) and not info["gpu"]:
        out.append(("unsloth/vllm are installed but no CUDA GPU is visible: training falls back to transformers "
                    "on CPU", "nvidia-smi  (check the GPU is attached)"))
    gpu = info["gpu"]
    if gpu and v["vllm"] and gpu["capability"] and tuple(gpu["capability"]) < (8, 0) and tested != "t4":
        out.append((f"vllm {v['vllm']} on {gpu['name']} (compute capability {gpu['capability'][0]}."
                    f"{gpu['capability'][1]}): newer vLLM dropped the attention backend pre-Ampere GPUs need; the "
                    "t4 profile has the vLLM Unsloth's T4 notebooks use (docs/install.md)",
                    "pip install -c profiles/t4-gpu.txt -e '.[gpu,vllm]'"))
    out += _declared_conflicts(v)
    return out


def _declared_conflicts(v: dict) -> list[tuple[str, str]]:
    """Requirements the installed stack declares on each other (e.g. vllm's exact torch) that the installed
    versions break: what `pip check` would say, for these packages only."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return []
    out = []
    for name in PACKAGES:
        if not v.get(name):
            continue
        dist = compat.distribution(name)
        for text in importlib.metadata.requires(dist) or [] if dist else []:
            req = Requirement(text)
            other = req.name.lower().replace("-", "_")
            if other not in PACKAGES or other == name or not v.get(other):
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                ok = Version(v[other]) in req.specifier or not req.specifier
            except InvalidVersion:
                continue
            if not ok:
                out.append((f"{name} {v[name]} requires {other}{req.specifier}, found {v[other]}",
                            f"pip install '{other}{req.specifier}'  (or the {name} release made for "
                            f"{other} {v[other]})"))
    return out


def report(recipe_path: str | None = None, overrides: list[str] = ()) -> str:
    """The doctor's screen as text."""
    info = facts()
    v = info["versions"]
    lines = ["grpo-kit doctor", f"python        {info['python']}  ({info['platform']})"]
    torch_line = v["torch"] or "not installed"
    if v["torch"]:
        torch_line += f"  (CUDA build {info['torch_cuda']})" if info["torch_cuda"] else "  (CPU-only build)"
    lines.append(f"torch         {torch_line}")
    gpu = info["gpu"]
    if gpu:
        cap = ".".join(map(str, gpu["capability"])) if gpu["capability"] else "?"
        lines.append(f"gpu           {gpu['name']}  {gpu['total_gb']} GiB  compute {cap}  bf16 "
                     f"{'yes' if gpu['bf16'] else 'no'}" + (f"  (x{gpu['count']})" if gpu["count"] > 1 else ""))
    else:
        lines.append("gpu           no CUDA GPU")
    lines.append(f"driver        {info['driver'] or '-'}")
    for name in PACKAGES[1:]:
        lines.append(f"{name:<13} {v[name] or '-'}" + (_bnb_words(info) if name == "bitsandbytes" else ""))
    lines.append(f"profile       {info['profile']}")
    if info["problems"]:
        lines.append("")
        for what, fix in info["problems"]:
            lines.append(f"problem       {what}\n  fix         {fix}")
    else:
        lines.append("problems      none found")
    if recipe_path:
        lines += [""] + _recipe_lines(recipe_path, list(overrides), info)
    return "\n".join(lines)


def _bnb_words(info: dict) -> str:
    """What bitsandbytes runs on here, after its version: the backend of 4-bit loading and 8-bit AdamW."""
    if not info["versions"].get("bitsandbytes") or "bnb_backend" not in info:
        return ""
    backend = info["bnb_backend"]
    if backend is None:
        return ("  (backend: none, no native library loaded for this device: 4-bit recipes train full-precision "
                "LoRA; python -m bitsandbytes says why)")
    return f"  (backend: {backend}: 4-bit nf4 and 8-bit AdamW run here)"


def _recipe_lines(path: str, overrides: list[str], info: dict) -> list[str]:
    recipe = load_recipe(path, overrides)  # an unreadable recipe is the user's error: exit 2 with its line
    lines = [f"recipe        {path}  ({recipe.model.name})"]
    if not info["versions"]["torch"] or info.get("torch_error"):
        return lines + ["plan          - (torch does not import)"]

    try:
        p = make_plan(recipe)
    except KitError as e:
        return lines + [f"plan          cannot run here: {e}"]
    lines.append(f"plan          backend {p.backend} | {p.weights} | "
                 f"{'vLLM' if p.fast_inference else 'HF'} generation | optim {p.optim} | {p.hardware.name}")
    lines += [f"note          {n}" for n in p.notes]

    lines.append(f"turn end      {describe_model(recipe.model.name)}")
    gpu_gb, name = (p.hardware.total_gb, p.hardware.name) if p.hardware.cuda else (fit.T4_GIB, "a 16 GB GPU, as the recipe asks")
    est = fit.estimate(recipe, gpu_gb, p if p.hardware.cuda else None, name)
    if est is None:
        lines.append("fit           - (no config for this model: its memory can't be estimated)")
    elif est.fits:
        lines.append(f"fit           fits: est. peak {est.total_gb:.1f} of {est.gpu_gb:.1f} GiB ({name})"
                     + ("; tight" if est.tight else ""))
    else:
        hint = fit.suggest(recipe, est, p if p.hardware.cuda else None)
        lines.append(f"fit           does not fit: est. peak {est.total_gb:.1f} of {est.gpu_gb:.1f} GiB ({name})"
                     + ("; try " + " ".join(f"--set {o}" for o in hint[0]) if hint else ""))
    return lines


def cli(args) -> int:
    print(report(args.recipe, getattr(args, "overrides", []) or []))
    return 0
