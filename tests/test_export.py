"""kit export: LoRA and merged float16 exports of the tiny demo run reload and generate (slow: the run trains);
untrained adapters and GGUF k-quants without Unsloth are refused with a message that says why (run folders made
without training). The GGUF round trip on the real model is tests/test_gguf.py."""

import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from kit import runs
from kit.errors import KitError
from kit.tools import export

ROOT = Path(__file__).resolve().parent.parent


def _run_without_training(folder: Path, lora_b: float) -> Path:
    """A run folder as `kit train` leaves one (the demo recipe, an adapter), made without training: a LoRA adapter
    on builtin:tiny as PEFT creates it, its B matrices set to `lora_b` (0: as before the first training step)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kit.models.catalog import model_path

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path("builtin:tiny")),
                           LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if ".lora_B." in name:
                weight.fill_(lora_b)
    model.save_pretrained(folder / runs.ADAPTER)
    shutil.copy(ROOT / "recipes" / "demo.yaml", folder / runs.RECIPE)
    return folder


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    return _run_without_training(tmp_path_factory.mktemp("untrained-run"), 0.0)


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    """Passes the all-zeros check; enough for the refusals, which come before any model is loaded."""
    return _run_without_training(tmp_path_factory.mktemp("made-run"), 0.01)


def _generate(model, tokenizer, n=6):
    import torch

    enc = tokenizer("What is 2 + 3?", return_tensors="pt")
    with torch.no_grad():
        return model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)


@pytest.mark.slow
def test_lora_export_copies_adapter_and_reloads(demo_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.models.catalog import model_path

    out = export.export(demo_run, "lora", tmp_path / "lora")
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "recipe.yaml", "export.json"} <= {
        p.name for p in out.iterdir()}
    assert "builtin:tiny" in (out / "README.md").read_text()
    assert json.loads((out / "export.json").read_text())["adapter_tensors"]["lora_B_nonzero"] > 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path("builtin:tiny")), out)
    assert _generate(model, tokenizer).shape[1] > 0


@pytest.mark.slow
def test_merged16_export_reloads_in_float16_and_matches_the_adapter(demo_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.models.catalog import model_path

    out = export.cli(SimpleNamespace(run=str(demo_run), format="merged16", out=str(tmp_path / "m16"),
                                     quantization="q4_k_m"))
    assert out == 0
    folder = tmp_path / "m16"
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    merged = AutoModelForCausalLM.from_pretrained(folder)
    assert merged.dtype == torch.float16 and not hasattr(merged, "peft_config")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path("builtin:tiny")),
                                     runs.latest_adapter(demo_run)).eval()
    ids = tokenizer("What is 2 + 3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = peft(ids).logits
        got = merged.float()(ids).logits
    assert torch.allclose(got, want, atol=0.05, rtol=0.01)  # merged == base + adapter, up to fp16 rounding
    assert _generate(merged.float(), tokenizer).shape[1] > ids.shape[1]


def test_untrained_adapter_is_refused(untrained_run, tmp_path):
    with pytest.raises(KitError, match="all zeros"):
        export.export(untrained_run, "lora", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("unsloth") is not None, reason="with Unsloth, k-quants are exported")
def test_k_quants_without_unsloth_are_one_line_naming_the_types_here(made_run, tmp_path, capsys):
    from kit.cli import main

    assert main(["export", str(made_run), "--format", "gguf", "--quantization", "Q4_K_M",
                 "--out", str(tmp_path / "gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--quantization q4_k_m" in err and "Unsloth on a CUDA GPU" in err
    assert f"GGUF types available here: {', '.join(export.GGUF_TYPES)}" in err
    assert not (tmp_path / "gguf").exists()  # refused before anything was loaded or written


def _tiny_gguf(file: Path, eos: int, tokenizer_model: str | None = None):
    """A real GGUF file, written by the gguf package's own writer: one tensor, an eos id, maybe a tokenizer kind."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(file), "llama")
    if tokenizer_model:
        writer.add_tokenizer_model(tokenizer_model)
    writer.add_eos_token_id(eos)
    writer.add_tensor("t", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return gguf


def _tiny_tokenizer_and_stops():
    from transformers import AutoTokenizer

    from kit.models import stopping
    from kit.models.catalog import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path("builtin:tiny"))
    return tokenizer, stopping.Stops("<eos>", tokenizer.eos_token_id, (tokenizer.eos_token_id,), None, ())


def test_gguf_eos_is_set_to_the_turn_end_in_place(tmp_path):
    tokenizer, stops = _tiny_tokenizer_and_stops()
    file = tmp_path / "m.gguf"
    gguf = _tiny_gguf(file, tokenizer.eos_token_id + 1)
    info = export._fix_metadata(file, stops, tokenizer)
    assert info["eos_token_id"] == tokenizer.eos_token_id and info["architecture"] == "llama"
    assert gguf.GGUFReader(file).fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id


def test_gguf_with_a_tokenizer_llama_cpp_cannot_load_is_refused(tmp_path):
    """A SentencePiece-type GGUF vocabulary without byte tokens: llama.cpp aborts loading it (std::out_of_range)."""
    tokenizer, stops = _tiny_tokenizer_and_stops()
    assert "<0x0A>" not in tokenizer.get_vocab()
    file = tmp_path / "m.gguf"
    _tiny_gguf(file, tokenizer.eos_token_id, tokenizer_model="llama")
    with pytest.raises(KitError, match="llama.cpp would abort loading the file"):
        export._fix_metadata(file, stops, tokenizer)
    assert not file.exists()


def test_existing_output_and_bad_names_are_refused(made_run, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(KitError, match="already exists"):
        export.export(made_run, "lora", tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["x"]
    with pytest.raises(KitError, match="not a GGUF quantization"):
        export.export(made_run, "gguf", tmp_path / "g", quantization="q4 k m")
    with pytest.raises(KitError, match="run folder not found"):
        export.export(tmp_path / "nope", "lora")
