"""kit bench: random-weight architectures from the shipped configs, and a CPU run labelled as such."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kit.errors import KitError
from kit.recipe import load_recipe
from kit.tools import bench

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16)  # the recipe's vocabulary and model type, a few layers' worth of everything else


def test_bench_refuses_without_random_weights():
    args = SimpleNamespace(recipe=str(ROOT / "recipes" / "qwen2.5-0.5b.yaml"), random_weights=False, steps=1, out=None,
                           overrides=[])
    with pytest.raises(KitError, match="never download weights"):
        bench.cli(args)


def test_bench_needs_a_shipped_architecture():
    with pytest.raises(KitError, match="no config for 'builtin:tiny'"):
        bench.model_config(load_recipe(ROOT / "recipes" / "demo.yaml"))


@pytest.mark.parametrize("recipe", ["qwen2.5-0.5b", "llama3.2-1b", "gemma3-1b"])
def test_random_model_loads_with_the_real_vocabulary_and_decodes_any_id(recipe):
    import torch
    from transformers import AutoConfig, AutoTokenizer

    r = load_recipe(ROOT / "recipes" / f"{recipe}.yaml")
    folder = bench.build_random_model(r, SMALL)
    assert bench.build_random_model(r, SMALL) == folder  # cached
    published, _ = bench.model_config(r)
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)  # what kit.models.loading does with a local folder
    assert config.vocab_size == published["vocab_size"] == len(tokenizer)
    assert config.model_type == published["model_type"]
    assert json.loads((folder / "RANDOM_WEIGHTS.json").read_text())["overrides"] == SMALL
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Natalia sold 48 clips in April."}],
                                           tokenize=False, add_generation_prompt=True)
    assert 5 < len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) < 40  # words, not characters
    text = tokenizer.decode(torch.randint(0, config.vocab_size, (200,)).tolist(), skip_special_tokens=True)
    assert isinstance(text, str) and text


@pytest.mark.slow
def test_cpu_bench_runs_the_real_path_and_says_cpu(tmp_path):
    out = tmp_path / "bench.json"
    result = bench.run(ROOT / "recipes" / "qwen2.5-0.5b.yaml", steps=2, out=out, gen_prompts=1,
                       overrides=["grpo.num_generations=2", "grpo.per_device_train_batch_size=2",
                                  "grpo.max_completion_length=16", "model.max_seq_length=272"],
                       arch_overrides=SMALL)
    assert json.loads(out.read_text()) == result
    assert result["device"] == "cpu" and result["cuda"] is False and result["memory"] is None
    assert result["random_weights"] is True and result["backend"] == "transformers"
    assert result["architecture"]["vocab_size"] == 151936 and result["architecture_overrides"] == SMALL
    assert len(result["step_times_s"]) == 2 and result["first_step_s"] > 0 and result["steady_step_s"] > 0
    assert result["completion_tokens_per_step"][-1] == pytest.approx(2 * 16, abs=2)  # random weights: no EOS
    gen = result["generation"]
    assert gen["backend"] == "HF generate" and gen["tokens"] == 2 * 16 and gen["tokens_per_s"] > 0
    assert "not this CPU run" in result["estimate"]["for"]
    assert result["versions"]["transformers"] and result["versions"]["trl"]
    assert set(bench.DEFINITIONS) <= set(result["definitions"])


@pytest.mark.gpu
def test_gpu_bench_measures_peak_memory_near_the_estimate(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    result = bench.run(ROOT / "recipes" / "qwen2.5-0.5b.yaml", steps=3, out=tmp_path / "bench.json",
                       overrides=["grpo.max_completion_length=256", "model.max_seq_length=512"])
    assert result["cuda"] and result["device"] != "cpu"
    memory, est = result["memory"], result["estimate"]
    assert memory["torch_max_reserved_gib"] > 0 and result["steady_step_s"] > 0
    assert result["generation"]["tokens_per_s"] > 0
    if not result["fast_inference"]:  # HF generation: PyTorch's allocator holds everything, as in the anchors
        assert memory["torch_max_reserved_gib"] == pytest.approx(est["reserved_gb"], rel=0.25)
