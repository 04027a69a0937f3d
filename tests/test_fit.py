"""kit fit: the VRAM estimate against measured anchors, the shipped configs against transformers, and the advice."""

import json
import re
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from kit.errors import KitError
from kit.models import catalog, fit
from kit.models.plan import Hardware, Plan
from kit.recipe import list_recipes, load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parent.parent
# the GPU recipes (the offline demos run builtin:tiny on a CPU)
RECIPES = [p for p in list_recipes(ROOT / "recipes") if not load_recipe(p).model.name.startswith("builtin:")]
H100 = Hardware(cuda=True, name="NVIDIA H100 80GB HBM3", capability=(9, 0), total_gb=79.2)
T4 = Hardware(cuda=True, name="Tesla T4", capability=(7, 5), total_gb=14.74)
TOLERANCE = 0.10  # the estimator must land within 10% of each measured anchor


def anchor_recipe(config: str, backend: str, four_bit: bool, completion: int):
    """The anchors' setup: G=8 in one micro-batch, LoRA r16 on all linear layers, HF generation."""
    return recipe_from_dict({
        "model": {"name": f"unsloth/{config}", "backend": backend, "load_in_4bit": four_bit, "fast_inference": False,
                  "lora_rank": 16, "max_seq_length": 256 + completion},
        "grpo": {"num_generations": 8, "per_device_train_batch_size": 8, "max_prompt_length": 256,
                 "max_completion_length": completion},
        "data": {"source": "builtin:gsm8k-sample"}})


@pytest.mark.parametrize("config,backend,four_bit,completion,measured", fit.ANCHORS,
                         ids=[f"{a[0]}-{a[1]}-{'nf4' if a[2] else 'bf16'}" for a in fit.ANCHORS])
def test_estimate_matches_measured_anchors(config, backend, four_bit, completion, measured):
    plan = Plan(backend, four_bit, False, "bfloat16", "adamw_8bit", H100)
    est = fit.estimate(anchor_recipe(config, backend, four_bit, completion), plan=plan)
    # the anchors are torch.cuda.max_memory_reserved(): no CUDA context in them
    assert est.reserved_gb == pytest.approx(measured, rel=TOLERANCE), est.terms
    assert est.phase == "training"


def test_anchor_ordering_is_reproduced():
    """bf16 > nf4 > Unsloth 4-bit for the same model, and the 3B at 512 tokens above all of them."""
    values = [fit.estimate(anchor_recipe(c, b, q, n), plan=Plan(b, q, False, "bfloat16", "adamw_8bit", H100)).total_gb
              for c, b, q, n, _ in fit.ANCHORS]
    assert values[0] > values[1] > values[2] and values[3] > values[0]


CONFIGS = sorted((ROOT / "kit" / "models" / "configs").glob("*.json"))
VOCAB = {"Qwen2.5": 151936, "Llama-3.2": 128256, "gemma-3-1b": 262144, "Qwen3-1.7B": 151936, "SmolLM2": 49152}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_loads_in_transformers_and_matches_the_parameter_count(path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = json.loads(path.read_text())
    assert cfg["vocab_size"] == next(v for k, v in VOCAB.items() if path.stem.startswith(k))
    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    real = sum(p.numel() for p in model.parameters())
    assert fit.Arch.from_config(cfg).params == pytest.approx(real, rel=0.002)


def test_every_16gb_recipe_fits_a_t4_with_room():
    assert len(RECIPES) >= 7
    for path in RECIPES:
        est = fit.estimate(load_recipe(path))
        assert est is not None, f"{path.stem}: no shipped config for its model"
        assert est.gpu_gb == fit.T4_GIB
        assert est.total_gb <= 15.0 and est.fits and not est.tight, (path.stem, est.total_gb)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_header_states_the_current_estimate(path):
    """The header's '~X GiB peak, estimated by `kit fit`' must not drift from the estimator."""
    header = "\n".join(path.read_text().splitlines()[:12])
    stated = re.search(r"~(\d+\.\d) GiB peak, estimated by `kit fit`", header)
    assert stated, "the header gives the estimated peak on a 16 GB GPU"
    assert float(stated.group(1)) == round(fit.estimate(load_recipe(path)).total_gb, 1)


def test_vllm_share_follows_gpu_memory_utilization():
    r = load_recipe(ROOT / "recipes" / "qwen2.5-1.5b.yaml")
    low = fit.estimate(load_recipe(ROOT / "recipes" / "qwen2.5-1.5b.yaml", ["model.gpu_memory_utilization=0.4"]))
    high = fit.estimate(r)
    assert high.phase == "generation" and high.total_gb > low.total_gb
    assert high.phases["training"] == low.phases["training"]  # standby: training does not see vLLM's KV cache


def test_without_standby_vllm_share_adds_to_training(monkeypatch):
    r = load_recipe(ROOT / "recipes" / "qwen2.5-1.5b.yaml")
    standby = fit.estimate(r)
    monkeypatch.setenv("UNSLOTH_VLLM_STANDBY", "0")
    plain = fit.estimate(r)
    assert plain.total_gb > standby.total_gb
    assert any(n.startswith("vLLM") for n, _ in plain.terms) and any(n.startswith("logits") for n, _ in plain.terms)


def test_unknown_model_has_no_estimate_and_local_folder_does(tmp_path):
    assert fit.estimate(recipe_from_dict({"model": {"name": "someone/unknown-7b"}})) is None
    cfg = json.loads((ROOT / "kit" / "models" / "configs" / "Qwen2.5-0.5B-Instruct.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    est = fit.estimate(recipe_from_dict({"model": {"name": str(tmp_path)}}))
    shipped = fit.estimate(recipe_from_dict({"model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}}))
    assert est.total_gb == shipped.total_gb
    assert catalog.config_path("unsloth/gemma-3-1b-it-unsloth-bnb-4bit").stem == "gemma-3-1b-it"


def test_suggest_finds_overrides_that_fit_and_validate():
    base = ["grpo.num_generations=8", "grpo.per_device_train_batch_size=8"]
    r = load_recipe(ROOT / "recipes" / "gemma3-1b.yaml", base)
    est = fit.estimate(r, gpu_gb=4.0)
    assert not est.fits and est.biggest[0].startswith("logits")
    overrides, better = fit.suggest(r, est)
    assert better.fits and better.total_gb < est.total_gb
    assert "grpo.per_device_train_batch_size=4" in overrides or "grpo.per_device_train_batch_size=2" in overrides
    load_recipe(ROOT / "recipes" / "gemma3-1b.yaml", base + overrides)  # a valid recipe


def test_warn_if_too_big_is_silent_on_cpu_and_when_it_fits(capsys):
    r = load_recipe(ROOT / "recipes" / "qwen2.5-3b.yaml")
    assert fit.warn_if_too_big(r, Plan("transformers", False, False, "float32", "adamw_torch",
                                       Hardware(cuda=False))) is None
    assert fit.warn_if_too_big(r, Plan("unsloth", True, True, "float16", "adamw_8bit", T4)).fits
    assert capsys.readouterr().out == ""


def test_warn_if_too_big_prints_one_line_naming_the_biggest_term_and_a_fix(capsys):
    r = load_recipe(ROOT / "recipes" / "gemma3-1b.yaml",
                    ["grpo.num_generations=8", "grpo.per_device_train_batch_size=8", "grpo.max_completion_length=1024",
                     "model.max_seq_length=1280"])
    small = Hardware(cuda=True, name="GeForce GTX 1650", capability=(7, 5), total_gb=3.8)
    est = fit.warn_if_too_big(r, Plan("unsloth", False, False, "float16", "adamw_8bit", small))
    out = capsys.readouterr().out
    assert not est.fits and out.count("\n") == 1
    assert "GeForce GTX 1650" in out and "logits" in out and "--set grpo.per_device_train_batch_size=" in out


def test_cli_prints_terms_and_verdict(capsys, monkeypatch):
    monkeypatch.setattr(fit, "detect_hardware", lambda: Hardware(cuda=False))
    args = SimpleNamespace(recipe=str(ROOT / "recipes" / "qwen2.5-1.5b.yaml"), gpu_memory=None, overrides=[])
    assert fit.cli(args) == 0
    out = capsys.readouterr().out
    assert "16 GB GPU" in out and "14.74 GiB" in out and "fits in 14.7 GiB" in out and "vLLM" in out
    args = SimpleNamespace(recipe=str(ROOT / "recipes" / "qwen2.5-3b.yaml"), gpu_memory=3.0, overrides=[])
    assert fit.cli(args) == 1
    assert "doesn't fit in 3.0 GiB" in capsys.readouterr().out


def test_cli_refuses_an_unknown_architecture(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""
        model:
          name: someone/unknown-7b
    """))
    with pytest.raises(KitError, match="no config for 'someone/unknown-7b'"):
        fit.cli(SimpleNamespace(recipe=str(path), gpu_memory=16.0, overrides=[]))


def test_unsloth_logits_and_layer_recompute_peak_one_after_the_other():
    """Unsloth's GRPO loss computes log-probs from hidden states, one fp32 chunk at a time, and is done before the
    decoder layers are recomputed: its estimate counts the larger of the two phases. TRL + PEFT keeps the logits,
    the recomputed layer and every checkpointed layer input at once."""
    unsloth = fit.estimate(anchor_recipe("Qwen2.5-3B-Instruct", "unsloth", True, 512),
                           plan=Plan("unsloth", True, False, "bfloat16", "adamw_8bit", H100))
    trl = fit.estimate(anchor_recipe("Qwen2.5-3B-Instruct", "transformers", True, 512),
                       plan=Plan("transformers", True, False, "bfloat16", "adamw_8bit", H100))
    u, t = dict(unsloth.terms), dict(trl.terms)
    assert any(n.startswith("log-softmax chunk: 128 tokens") for n in u)  # 513 rows / 4 chunks
    assert not any(n.startswith("activations") for n in u)  # the logits phase is the larger one here
    assert sum(1 for n in t if n.startswith("activations")) == 2 and any(n.startswith("logits") for n in t)
    assert unsloth.total_gb == pytest.approx(sum(u.values()), abs=0.01)
    # short completions: the recomputed layer is the larger phase, and the logits drop out of the peak
    short = fit.estimate(anchor_recipe("Qwen2.5-3B-Instruct", "unsloth", True, 32),
                         plan=Plan("unsloth", True, False, "bfloat16", "adamw_8bit", H100))
    assert any(n.startswith("activations") for n, _ in short.terms)
    assert not any(n.startswith("logits") for n, _ in short.terms)
