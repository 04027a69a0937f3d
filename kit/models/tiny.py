"""`builtin:tiny`: a tiny Llama-architecture model and byte-level BPE tokenizer built locally, deterministically,
in seconds, so the demo and the tests need no download.

It is saved like any hub model (config.json, model.safetensors, tokenizer.json, chat template) and then loaded
through exactly the same code path as a real model. The format tags are ordinary (not special) tokens: special
tokens are stripped from decoded completions, and the format rewards would never see them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kit.recipe import DEFAULT_SYSTEM_PROMPT
from kit.task import answers, arithmetic, data

VERSION = "v1"  # bump when anything below changes: the cache folder is keyed by it
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TAGS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>"]
ARCH = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)


def cache_dir() -> Path:
    return Path(os.environ.get("KIT_CACHE", Path.home() / ".cache" / "grpo-kit"))


def build_once(path: Path, build_into) -> Path:
    """`path`, built by `build_into(tmp_folder)` on first use. Built in a temporary folder and renamed into place,
    so parallel runs never see (or load) a half-written model."""
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=path.parent))
    try:
        build_into(tmp)
        try:
            tmp.rename(path)
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_key() -> str:
    """What the saved files depend on: this file's version and shape, and the libraries that write them (a
    tokenizer saved by transformers 5 does not load in transformers 4)."""
    import hashlib
    import json
    from importlib.metadata import version

    libs = {name: version(name) for name in ("transformers", "tokenizers")}
    blob = json.dumps([VERSION, ARCH, libs], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def tiny_path() -> Path:
    """Folder of the tiny model, built on first use (one folder per build key)."""
    return build_once(cache_dir() / f"tiny-llama-{build_key()}", build)


def corpus() -> list[str]:
    """The kit's own texts (demo task, shipped GSM8K sample, system prompt): what local tokenizers learn from."""
    texts = [DEFAULT_SYSTEM_PROMPT]
    for row in arithmetic.arithmetic_rows("train"):
        texts += [row["question"], answers.solution_to_completion(row["answer"])]
    for row in data.load_rows("builtin:gsm8k-sample", "train"):
        texts += [row["question"], row["answer"]]
    return texts


def train_bpe(vocab_size: int, special: list[str], digits: bool = False):
    """A byte-level BPE `tokenizers.Tokenizer` learnt from `corpus()`, `special` first; `digits`: one token per
    digit. builtin:tiny and the benchmarks' random-weight models (kit.tools.bench) both start from it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) \
        if digits else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    return tok


def build(path: Path, seed: int = 0) -> None:
    """Write a tokenizer and a randomly initialised model to `path` (same bytes every time)."""
    import torch
    from tokenizers import AddedToken
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = train_bpe(640, SPECIAL, digits=True)  # one token per digit: arithmetic is learnable
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **ARCH)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
