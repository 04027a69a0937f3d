"""`kit doctor`: one paste-able screen, exit 0 even with pieces missing, known-bad combinations with their fix, and
with a recipe the plan and the fit verdict. No model is loaded."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kit import cli
from kit.tools import doctor

ROOT = Path(__file__).resolve().parent.parent


def test_doctor_reports_this_machine(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    import torch
    import transformers
    import trl

    assert f"torch         {torch.__version__}" in out
    assert f"transformers  {transformers.__version__}" in out and f"trl           {trl.__version__}" in out
    for name in ("peft", "accelerate", "unsloth", "unsloth_zoo", "vllm", "bitsandbytes", "gradio", "profile"):
        assert any(line.startswith(name) for line in out.splitlines()), name
    if not torch.cuda.is_available():
        assert "gpu           no CUDA GPU" in out


def test_doctor_with_a_recipe_shows_plan_and_fit(capsys):
    assert cli.main(["doctor", "qwen2.5-1.5b"]) == 0  # a bare name, as kit train takes it
    out = capsys.readouterr().out
    assert "recipe        " in out and "unsloth/Qwen2.5-1.5B-Instruct" in out
    plan = next(line for line in out.splitlines() if line.startswith("plan "))
    assert "backend " in plan and "generation" in plan
    fit = next(line for line in out.splitlines() if line.startswith("fit "))
    assert "fits" in fit and "GiB" in fit


def test_doctor_bad_recipe_is_one_line_exit_2(capsys, tmp_path):
    assert cli.main(["doctor", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def _info(**versions):
    base = {name: None for name in doctor.PACKAGES}
    base.update(torch="2.11.0+cu130", transformers="5.17.0", trl="1.14.0", peft="0.21.2", accelerate="1.15.0",
                datasets="4.8.5")
    base.update(versions)
    info = {"versions": base, "torch_cuda": "13.0", "driver": "580.65",
            "gpu": {"name": "Tesla T4", "total_gb": 14.7, "capability": (7, 5), "bf16": False, "count": 1}}
    return info


@pytest.mark.parametrize("versions, extra, wanted", [
    ({"trl": "1.16.0"}, {}, "pip install transformers==5.17.0 trl==1.14.0"),
    ({"unsloth": "2026.10.9", "unsloth_zoo": "2026.10.9"}, {}, "pip install unsloth==2026.10.7"),
    ({"transformers": "4.56.2"}, {}, "pip install transformers==5.17.0 trl==1.14.0"),
    ({"torch": "2.15.1"}, {}, "pip install 'torch>=2.6,<2.15'"),
    ({"unsloth": "2026.10.7", "unsloth_zoo": "2026.10.5"}, {}, "pip install unsloth_zoo==2026.10.7"),
    ({}, {"driver": "550.54", "torch_cuda": "13.0"}, "update the driver"),
    ({}, {"torch_cuda": None}, "--index-url https://download.pytorch.org/whl/cu128"),
    ({"vllm": "0.26.0"}, {}, "profiles/t4-gpu.txt"),
    ({"peft": None}, {}, "pip install -e ."),
])
def test_known_bad_combinations_come_with_a_fix(versions, extra, wanted):
    info = _info(**versions)
    info.update(extra)
    fixes = [fix for _, fix in doctor.problems(info)]
    assert any(wanted in fix for fix in fixes), fixes


def test_a_good_stack_has_no_problems():
    info = _info(unsloth="2026.10.7", unsloth_zoo="2026.10.7")
    info["gpu"] = {"name": "NVIDIA H100", "total_gb": 79.2, "capability": (9, 0), "bf16": True, "count": 1}
    assert [p for p in doctor.problems(info) if "requires" not in p[0]] == []


# `kit doctor RECIPE` as a user runs it, in a fresh process, then what that process holds: a model loaded (or
# built) would leave transformers' model classes there (modeling_utils, models.<name>.modeling_<name>); training, the
# training stack (peft, trl, ...).
DOCTOR_THEN_MODULES = """
import json, re, sys, time
from kit.cli import main
start = time.time()
code = main(["doctor", "recipes/demo.yaml"])
held = sorted(m for m in sys.modules if m.split(".")[0] in ("peft", "trl", "unsloth", "vllm", "bitsandbytes")
              or re.match(r"transformers[.](modeling_utils$|models[.](?!auto[.])[^.]+[.]modeling_)", m))
print("HELD " + json.dumps(held))
print(f"SECONDS {time.time() - start:.1f}")
sys.exit(code)
"""


def test_doctor_shows_the_recipe_and_loads_no_model():
    from kit.models.catalog import model_path

    model_path("builtin:tiny")  # built once into the session's cache (seconds): doctor only reads its files
    out = subprocess.run([sys.executable, "-c", DOCTOR_THEN_MODULES], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    # what the user reads about the recipe: the model, what would run here, where answers stop, the memory verdict
    assert "recipe        recipes/demo.yaml  (builtin:tiny)" in lines, out.stdout
    plan = next((line for line in lines if line.startswith("plan ")), "")
    assert re.fullmatch(r"plan +backend (transformers|unsloth) \| \S+ \| (HF|vLLM) generation \| optim \S+ \| .+",
                        plan), out.stdout
    turn_end = next((line for line in lines if line.startswith("turn end ")), "")
    assert "<|end|>" in turn_end, out.stdout  # the tiny model's turn end, read from its chat template
    fit = next((line for line in lines if line.startswith("fit ")), "")
    assert re.match(r"fit +fits: est\. peak \d+\.\d of \d+\.\d GiB", fit), out.stdout
    # and nothing of a model in the process afterwards
    held = json.loads(next(line for line in lines if line.startswith("HELD "))[5:])
    assert held == [], f"kit doctor loaded a model or the training stack: {held}"
    seconds = float(next(line for line in lines if line.startswith("SECONDS "))[8:])
    assert seconds < 60, f"kit doctor took {seconds} s"


def test_both_tested_profiles_are_named():
    main = _info()
    assert doctor.profile(main).startswith("main (")
    t4 = _info(transformers="4.56.2", trl="0.22.2", torch="2.9.0+cu126")
    assert doctor.profile(t4).startswith("t4 (") and not [p for p in doctor.problems(t4) if "profile" in p[0]]
    assert doctor.profile(_info(trl="1.16.0")).startswith("none tested")
