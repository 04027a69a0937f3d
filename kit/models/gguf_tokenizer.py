"""The byte-level BPE tokenizer that transformers' GGUF loader saves in a SentencePiece shape, and its repair.

transformers builds the tokenizer of a Llama-architecture GGUF with its Llama converter even when the vocabulary is
byte-level BPE (GGUF tokenizer model "gpt2": SmolLM2, Llama 3): a BPE model with `byte_fallback` and a decoder
Sequence [ByteFallback, Fuse, Replace("▁", " "), ByteLevel]. transformers tokenizes and decodes it as it should
(the vocabulary has no <0xNN> byte tokens, so the fallback never fires), but llama.cpp's converter reads
`byte_fallback` + a Sequence decoder as a SentencePiece (Llama) vocabulary, and the GGUF it writes aborts in
llama.cpp, which looks up byte tokens that are not there. The repair gives tokenizer.json the shape of the original
byte-level releases: no byte fallback, a ByteLevel decoder; no token id changes.

builtin:smollm2-135m repairs its own build (kit.models.smollm2); `kit export --format gguf` repairs the exported copy
of any model saved this way (kit.tools.export).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# The decoder of the original byte-level releases (e.g. HuggingFaceTB/SmolLM2-135M-Instruct's tokenizer.json).
BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _byte_level_in(component: dict | None) -> bool:
    """A ByteLevel step in a pre-tokenizer or decoder, alone or inside a Sequence."""
    if not component:
        return False
    if component.get("type") == "ByteLevel":
        return True
    return any(_byte_level_in(c) for c in component.get("pretokenizers") or component.get("decoders") or ())


def needs_byte_level_repair(tokenizer: dict) -> bool:
    """True for a tokenizer.json (as a dict) in the shape above: BPE with `byte_fallback`, a Sequence decoder,
    byte-level underneath (a ByteLevel pre-tokenizer or decoder step) and no byte tokens for the fallback to use. A
    real SentencePiece-style BPE (Llama 2, Mistral) has the <0x00>..<0xFF> tokens and is left alone."""
    model, decoder = tokenizer.get("model") or {}, tokenizer.get("decoder") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback") or decoder.get("type") != "Sequence":
        return False
    if not (_byte_level_in(decoder) or _byte_level_in(tokenizer.get("pre_tokenizer"))):
        return False
    return not any(_BYTE_TOKEN.fullmatch(token) for token in model.get("vocab") or {})


def repair_byte_level(tokenizer_json: Path) -> bool:
    """Rewrite `tokenizer_json` in place into the byte-level shape if `needs_byte_level_repair`; True if it did.
    Callers pass a copy they own: never a user's model folder."""
    tokenizer_json = Path(tokenizer_json)
    t = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    if not needs_byte_level_repair(t):
        return False
    t["model"]["byte_fallback"] = False
    t["decoder"] = dict(BYTE_LEVEL_DECODER)
    tokenizer_json.write_text(json.dumps(t, ensure_ascii=False), encoding="utf-8")
    return True
