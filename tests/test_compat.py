"""kit.models.compat: the profiles it names are the ones the constraint files pin and pyproject admits, and each shim does
on the installed transformers/trl what it claims. `make test` runs these on profile main, `make test-compat` on t4."""

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from kit import runs
from kit.models import catalog, compat
from kit.models.plan import Hardware, Plan
from kit.models.plan import plan as plan_for
from kit.runs import metrics

ROOT = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    """name -> version of the `name==version` lines of a constraints file, following its `-c` includes."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-c"):
            pins.update(_pins(path.parent / line[2:].strip()))
        elif line:
            name, _, ver = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = ver.strip()
    return pins


@pytest.mark.parametrize("name", sorted(compat.PROFILES))
def test_profile_files_pin_what_compat_names(name):
    core, gpu = _pins(ROOT / "profiles" / f"{name}.txt"), _pins(ROOT / "profiles" / f"{name}-gpu.txt")
    assert {k: core[k] for k in compat.PROFILES[name]} == compat.PROFILES[name]
    assert {k: gpu[k] for k in compat.GPU_PINS[name]} == compat.GPU_PINS[name]
    assert set(core) < set(gpu)  # the GPU file adds to the core set, it does not replace it


@pytest.mark.parametrize("name", sorted(compat.PROFILES))
def test_pyproject_admits_every_pin_of_each_profile(name):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in ("gpu", "vllm") for r in project["optional-dependencies"][extra]]
    pins = _pins(ROOT / "profiles" / f"{name}-gpu.txt")
    checked = 0
    for req in requirements:
        key = req.name.lower().replace("_", "-")
        if key in pins:
            assert req.specifier.contains(pins[key]), f"pyproject {req} rejects {name}'s {key}=={pins[key]}"
            checked += 1
    assert checked >= 7  # torch, transformers, trl, peft, accelerate, datasets, unsloth, vllm, ...


def test_profile_names_the_installed_set_or_says_other(monkeypatch):
    installed = {"transformers": "4.56.2", "trl": "0.22.2"}
    monkeypatch.setattr(compat, "version", lambda p: installed.get(p))
    assert compat.profile() == "t4"
    installed.update(transformers="5.17.0", trl="1.14.0")
    assert compat.profile() == "main"
    installed["trl"] = "1.15.0"
    assert compat.profile() == "other (transformers 5.17.0, trl 1.15.0)"
    installed.update(trl="1.14.0", vllm="0.11.2", unsloth="2026.10.7")
    line = compat.describe()
    assert line.startswith("profile main, torch not installed, vllm 0.11.2 (profile main pins 0.26.0; untested")
    assert line.endswith("unsloth 2026.10.7")


def test_these_tests_run_on_a_tested_profile():
    # make test runs on main and make test-compat on t4; any other set is not what the kit claims to support.
    assert compat.profile() in compat.PROFILES, compat.describe()


@pytest.mark.parametrize("config", ["SFTConfig", "GRPOConfig"])
def test_warmup_is_a_share_of_the_steps(config, tmp_path):
    import trl

    cls = getattr(trl, config)
    args = cls(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **compat.warmup(cls, 0.1))
    assert args.get_warmup_steps(200) == 20


def _qwen3_like_recipe(tmp_path, enable_thinking):
    from kit.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("model:\n  name: builtin:tiny\ndata:\n  source: builtin:arithmetic\n  limit: 4\n"
                    + (f"  enable_thinking: {str(enable_thinking).lower()}\n" if enable_thinking is not None else "")
                    + "grpo:\n  max_prompt_length: 200\n")
    return load_recipe(path)


@pytest.fixture(scope="module")
def thinking_tokenizer():
    """The tiny tokenizer with a template that, like Qwen3's, reads `enable_thinking`."""
    from transformers import AutoTokenizer


    tok = AutoTokenizer.from_pretrained(catalog.model_path(catalog.TINY))
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>\n{% if enable_thinking is defined and "
                         "not enable_thinking %}<answer>{% endif %}{% endif %}")
    return tok


@pytest.mark.parametrize("enable_thinking", [False, None])
def test_chat_template_arguments_reach_the_grpo_prompt(tmp_path, thinking_tokenizer, enable_thinking):
    from trl import GRPOConfig

    from kit.train.stages import grpo_dataset
    from kit.train.trl_args import grpo_config

    recipe = _qwen3_like_recipe(tmp_path, enable_thinking)
    args = grpo_config(recipe, plan_for(recipe), tmp_path / "out")
    prompts = grpo_dataset(recipe, thinking_tokenizer)["prompt"]
    fields = {f for f in GRPOConfig.__dataclass_fields__}
    if "max_prompt_length" in fields:  # TRL 0.22 truncates to its own value: it must be the recipe's
        assert args.max_prompt_length == 200
    if enable_thinking is None:  # nothing to pass: chat messages on every profile
        assert all(isinstance(p, list) for p in prompts)
    elif "chat_template_kwargs" in fields:  # TRL applies the template with the recipe's arguments
        assert args.chat_template_kwargs == {"enable_thinking": False}
        assert all(isinstance(p, list) for p in prompts)
    else:  # the kit renders the prompt itself, with them
        assert all(isinstance(p, str) and p.endswith("<|assistant|>\n<answer>") for p in prompts)


def test_loaded_tokenizers_return_only_what_generate_takes(tmp_path):
    from transformers import AutoTokenizer

    from kit.models import loading as kit_model
    from kit.recipe import recipe_from_dict

    recipe = recipe_from_dict({"model": {"name": catalog.TINY}})
    _, tokenizer = kit_model._load_transformers_base(recipe.model, plan_for(recipe))
    assert set(tokenizer(["2 + 3"])) == {"input_ids", "attention_mask"}
    tokenizer.save_pretrained(tmp_path)  # as beside an adapter or an export: loads the same way
    assert set(AutoTokenizer.from_pretrained(tmp_path)(["2 + 3"])) == {"input_ids", "attention_mask"}


@pytest.mark.slow
def test_grpo_records_carry_step_time(demo_run):
    grpo = [r for r in metrics.read_jsonl(demo_run / runs.METRICS) if r["stage"] == "2-grpo" and "reward" in r]
    assert len(grpo) == 4 and all(r["step_time"] > 0 for r in grpo)


def test_vllm_failing_to_start_is_one_line_naming_the_switch(monkeypatch):
    import sys
    import types

    from kit.errors import KitError
    from kit.models import loading as kit_model
    from kit.recipe import recipe_from_dict

    class FastLanguageModel:  # stands in for Unsloth's loader, failing inside vLLM's start-up as on a GPU
        @staticmethod
        def from_pretrained(model_name, **kwargs):
            assert kwargs["fast_inference"] is True
            raise RuntimeError("Cannot find an attention backend for compute capability 7.5\nmore detail")

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    recipe = recipe_from_dict({"model": {"name": "unsloth/Qwen2.5-0.5B-Instruct"}})
    t4 = Hardware(cuda=True, name="Tesla T4", capability=(7, 5), total_gb=14.7)
    plan = Plan(backend="unsloth", load_in_4bit=True, fast_inference=True, dtype="float16",
                          optim="adamw_8bit", hardware=t4)
    with pytest.raises(KitError) as err:
        kit_model._load_unsloth(recipe.model, plan, seed=0, adapter=None)
    message = str(err.value)
    assert "\n" not in message and "Tesla T4" in message and "attention backend" in message
    assert "--set model.fast_inference=false" in message
    assert isinstance(err.value.__cause__, RuntimeError)


def test_an_explained_library_failure_keeps_its_traceback_in_the_run_folder(monkeypatch, tmp_path):
    from kit.errors import KitError
    from kit.train import flow

    def load(recipe, plan, seed):
        try:
            raise RuntimeError("engine core initialization failed")
        except RuntimeError as e:
            raise KitError("model.fast_inference: vLLM failed; --set model.fast_inference=false") from e

    monkeypatch.setattr(flow, "load", load)
    with pytest.raises(KitError):
        flow.train(ROOT / "recipes" / "demo.yaml", [f"run.output_dir={tmp_path}"])
    run = next(tmp_path.iterdir())
    assert runs.read_summary(run)["error"] == "model.fast_inference: vLLM failed; --set model.fast_inference=false"
    assert "engine core initialization failed" in (run / "error.log").read_text()


def test_notebooks_install_the_profile_of_their_gpu():
    import json

    for path in sorted((ROOT / "colab").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        if "accelerator" not in nb["metadata"]:  # a CPU notebook (built-in model): no GPU, no GPU profile
            continue
        install = "".join(nb["cells"][2]["source"])
        choose = next(line for line in install.splitlines() if line.startswith("PROFILE = "))
        for name, cap, want in (("Tesla T4", "7.5", "t4"), ("NVIDIA L4", "8.9", "main"),
                                ("NVIDIA A100-SXM4-40GB", "8.0", "main"), ("Tesla T4", "", "t4")):
            scope = {"name": name, "cap": cap}
            exec(choose, scope)
            assert scope["PROFILE"] == want, (path.name, name)
            assert (ROOT / "profiles" / f"{want}-gpu.txt").is_file()
        assert "pip install -q -c profiles/{PROFILE}-gpu.txt -e '{extras}'" in install, path.name
