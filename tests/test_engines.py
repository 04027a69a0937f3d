"""One engine type (kit.models.engines): which engine each plan gets, for inference and for a model being trained,
what adapter on/off and load_adapter do on each, and that the Generator hands everything to its engine. The two
vLLM engines run here against stand-ins for vLLM and Unsloth (recording what they were asked); tests/test_vllm.py
runs the in-process engine for real."""

import copy
import gc
import inspect
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import FakeLLM, FakeUnslothModel, SamplingParams

from kit.errors import KitError
from kit.models import engines, loading
from kit.models.engines import Generator, HFGenerate, InProcessVLLM, UnslothVLLM
from kit.models.plan import Hardware, Plan
from kit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "recipes" / "demo.yaml"
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


def make_plan(backend: str, fast: bool) -> Plan:
    return Plan(backend, load_in_4bit=False, fast_inference=fast, dtype="float32", optim="adamw_torch",
                hardware=Hardware(cuda=False))


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    sys.modules["vllm"].SamplingParams = SamplingParams


@pytest.fixture(scope="module")
def tiny():
    """builtin:tiny and its prepared tokenizer, as kit.models.loading loads them (HF plan, no adapter)."""
    model, tokenizer, _ = loading.load_for_inference(load_recipe(DEMO), None, make_plan("transformers", False))
    return model, tokenizer


def _peft(tiny, scale: float = 0.5, seed: int = 0):
    """A fresh PEFT copy of the tiny model whose adapter changes its answers (LoRA B and lm_head moved)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(tiny[0]), LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8,
                                                              target_modules=["q_proj", "v_proj"],
                                                              modules_to_save=["lm_head"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * scale)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------------------------
# The plan picks the engine


@pytest.mark.parametrize("backend,fast,engine,name", [
    ("transformers", False, HFGenerate, "HF generate"),
    ("transformers", True, InProcessVLLM, "vLLM (in-process engine, adapter merged in)"),
    ("unsloth", False, HFGenerate, "HF generate"),
    ("unsloth", True, UnslothVLLM, "vLLM (Unsloth fast_generate)"),
])
def test_load_for_inference_returns_the_engine_the_plan_picks(monkeypatch, tiny, tmp_path, backend, fast, engine,
                                                              name):
    loaded_adapters = []
    monkeypatch.setattr(engines, "start_vllm", lambda m, p: FakeLLM([1]))
    monkeypatch.setattr(loading, "load_adapter_weights", lambda model, path: loaded_adapters.append(path))
    unsloth = types.ModuleType("unsloth")
    unsloth.FastLanguageModel = SimpleNamespace(for_inference=lambda model: None)
    monkeypatch.setitem(sys.modules, "unsloth", unsloth)

    def load_unsloth(m, p, seed, adapter):  # what loading._load_unsloth hands back, without Unsloth
        model = FakeUnslothModel(tiny[0].generation_config) if p.fast_inference else _peft(tiny)
        if adapter is not None:
            loading.load_adapter_weights(model, adapter)
        return model, tiny[1]

    monkeypatch.setattr(loading, "_load_unsloth", load_unsloth)
    adapter = None
    if backend == "unsloth":  # the transformers backend reads a real adapter folder: none needed to pick
        adapter = tmp_path / "adapter"
    model, tokenizer, chosen = loading.load_for_inference(load_recipe(DEMO), adapter, make_plan(backend, fast))
    assert type(chosen) is engine and chosen.name == name == Generator(chosen).engine_name
    assert chosen.model is model and chosen.tokenizer is tokenizer
    if backend == "unsloth" and fast:  # the adapter is a LoRA request, not weights loaded into the model
        assert chosen.lora_request == ("lora request", str(adapter)) and not loaded_adapters
    elif backend == "unsloth":
        assert loaded_adapters == [adapter]


def test_a_model_being_trained_answers_through_the_engine_its_plan_and_trainer_attached(monkeypatch, tiny, tmp_path):
    """HF with live weights unless something is attached: Unsloth's vLLM (attached by `load` when the plan has it),
    handed the current adapter through a scratch folder at each call; an in-process engine (TRL's colocated one),
    which reloads the current weights before it answers; also for the model a trainer wraps (`.module`)."""
    model = _peft(tiny)
    assert type(engines.training_engine(model, tiny[1], tmp_path)) is HFGenerate

    unsloth_model = FakeUnslothModel(tiny[0].generation_config)
    monkeypatch.setattr(loading, "_load_unsloth", lambda m, p, seed, adapter: (unsloth_model, tiny[1]))
    loading.load(load_recipe(DEMO), make_plan("unsloth", True), seed=0)
    for step in ("a", "b"):
        engine = Generator.of_training_model(unsloth_model, tiny[1], tmp_path / step).engine
        assert type(engine) is UnslothVLLM and engine.lora_request == ("lora request", str(tmp_path / step))
    assert unsloth_model.saved == [str(tmp_path / "a"), str(tmp_path / "b")]
    unsloth_hf = FakeUnslothModel(tiny[0].generation_config)
    monkeypatch.setattr(loading, "_load_unsloth", lambda m, p, seed, adapter: (unsloth_hf, tiny[1]))
    loading.load(load_recipe(DEMO), make_plan("unsloth", False), seed=0)
    assert type(engines.training_engine(unsloth_hf, tiny[1], tmp_path)) is HFGenerate

    llm = FakeLLM([1])
    engines.attach_engine(model, InProcessVLLM, llm=llm, name="vLLM (TRL's colocated engine, weights synced)")
    class Wrapped:  # what DDP makes of the model: the model is its `.module`
        module = model

    for holder in (model, Wrapped()):
        engine = engines.training_engine(holder, tiny[1], tmp_path)
        assert type(engine) is InProcessVLLM and engine.llm is llm and engine.loaded is None
        assert engine.name == "vLLM (TRL's colocated engine, weights synced)"


def test_attaching_an_engine_does_not_keep_the_model_alive(tiny):
    import weakref

    model = _peft(tiny)
    engines.attach_engine(model, InProcessVLLM, llm=FakeLLM([1]), name="x")
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


# ---------------------------------------------------------------------------------------------------------------
# Adapter on/off and load_adapter, per engine


def test_hf_adapter_off_answers_like_the_base_model_and_load_adapter_swaps_weights(tiny, tmp_path):
    base = Generator(HFGenerate(*tiny))
    prompts = [QUESTION, [{"role": "user", "content": "Hi there"}]]
    base_answers = base.generate(prompts, 12)
    gen = Generator(HFGenerate(_peft(tiny), tiny[1]))
    trained = gen.generate(prompts, 12)
    with gen.use_adapter(False):
        assert gen.generate(prompts, 12) == base_answers
        assert list(gen.stream(QUESTION, 12))[-1] == base_answers[0][0]
    assert trained != base_answers and gen.generate(prompts, 12) == trained  # on again after the block

    other = _peft(tiny, seed=1)
    other.save_pretrained(tmp_path / "other")
    gen.engine.load_adapter(tmp_path / "other")
    assert gen.generate(prompts, 12) == Generator(HFGenerate(other, tiny[1])).generate(prompts, 12) != trained
    from peft import LoraConfig, get_peft_model

    for name, modules_to_save in (("wider", ["lm_head"]), ("no-lm-head", None)):  # another recipe's adapters
        config = LoraConfig(task_type="CAUSAL_LM", r=8, target_modules=["q_proj", "v_proj"],
                            modules_to_save=modules_to_save)
        get_peft_model(copy.deepcopy(tiny[0]), config).save_pretrained(tmp_path / name)
        with pytest.raises(KitError, match="adapter does not fit this model"):
            gen.engine.load_adapter(tmp_path / name)


def test_in_process_vllm_loads_the_weights_the_adapter_switch_asks_for(fake_vllm, tiny, tmp_path):
    model, tokenizer = _peft(tiny), tiny[1]
    answer = tokenizer("The answer is 5.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    llm = FakeLLM(answer)
    gen = Generator(InProcessVLLM(model, tokenizer, llm, "vLLM (in-process engine, adapter merged in)"))
    merged = {n: t.clone() for n, t in engines.vllm_weights(model, adapter_on=True)}
    base = {n: t.clone() for n, t in engines.vllm_weights(model, adapter_on=False)}

    def holds(weights) -> bool:  # merging and unmerging again moves the base weights by float rounding only
        return set(llm.weights) == set(weights) and all(llm.weights[n].allclose(t, atol=1e-6)
                                                        for n, t in weights.items())

    assert not holds(base)  # the adapter changes the weights vLLM gets
    assert gen.generate([QUESTION], 8) == [["The answer is 5."]]  # decoded by the tokenizer, not vLLM's text
    assert llm.loads == 1 and holds(merged)
    gen.generate([QUESTION], 8)
    assert llm.loads == 1  # vLLM holds these weights already
    with gen.use_adapter(False):
        assert list(gen.stream(QUESTION, 8)) == ["The answer is 5."]  # one piece
    assert llm.loads == 2 and holds(base)
    gen.generate([QUESTION], 8)
    assert llm.loads == 3 and holds(merged)

    other = _peft(tiny, seed=1)
    other.save_pretrained(tmp_path / "other")
    gen.engine.load_adapter(tmp_path / "other")
    gen.generate([QUESTION], 8)
    assert llm.loads == 4 and llm.weights["lm_head.weight"].equal(other.lm_head.modules_to_save.default.weight)


def test_unsloth_vllm_sends_the_lora_request_only_with_the_adapter_on(fake_vllm, tiny, tmp_path):
    model = FakeUnslothModel(tiny[0].generation_config)
    gen = Generator(UnslothVLLM(model, tiny[1]))
    assert gen.generate([QUESTION], 8) == [["Unsloth's text"]] and model.calls[-1][2] is None  # no adapter yet
    gen.engine.load_adapter(tmp_path / "a")
    gen.generate([QUESTION], 8)
    with gen.use_adapter(False):
        assert list(gen.stream(QUESTION, 8)) == ["Unsloth's text"]
    gen.generate([QUESTION], 8, temperature=1.0, n=3, seed=7)
    assert [c[2] for c in model.calls[1:]] == [("lora request", str(tmp_path / "a")), None,
                                              ("lora request", str(tmp_path / "a"))]
    params = model.calls[-1][1].kwargs
    assert (params["n"], params["seed"], params["temperature"]) == (3, 7, 1.0)
    assert model.calls[0][1].kwargs["seed"] is None  # greedy: no seed
    ids = model.calls[0][0][0]["prompt_token_ids"]
    assert ids == tiny[1](gen._texts([QUESTION])[0], add_special_tokens=False)["input_ids"]  # no second BOS


def test_generator_delegates_without_asking_what_its_engine_is():
    """One engine type: the Generator never asks which kind it was handed (isinstance/hasattr), and no caller
    reaches past the engine for a LoRA request, a vLLM handle or the adapter weights."""
    from kit.app import chat
    from kit.eval import compare, evaluate
    from kit.train import callbacks, rejection

    source = inspect.getsource(Generator)
    for probe in ("isinstance(", "hasattr(", "getattr(", "lora_request", "fast_generate", "vllm"):
        assert probe not in source, probe
    for module in (chat, compare, evaluate, callbacks, rejection):
        text = inspect.getsource(module)
        for probe in ("lora_request", ".llm", "fast_generate", "load_lora", "set_peft_model_state_dict",
                      "disable_adapter", "use_vllm"):
            assert probe not in text, (module.__name__, probe)
