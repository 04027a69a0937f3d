"""The models the kit knows by name: the builtin ones it builds on this machine, and the recipe models whose
published config.json and stop tokens it ships (models/configs/, models/turn_ends.json). Imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from kit.errors import RecipeError
from kit.models import smollm2, tiny

TINY = "builtin:tiny"            # models/tiny.py: built locally in seconds (the offline demo and the tests)
SMOLLM2 = smollm2.NAME           # models/smollm2.py: a real pretrained model from a PyPI wheel
HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
TURN_ENDS = HERE / "turn_ends.json"


def model_path(name: str) -> str:
    """Hub id or local folder to load; builds a built-in model on first use (builtin:tiny in seconds,
    builtin:smollm2-135m from its PyPI wheel in about 30 s)."""
    if name == TINY:
        return str(tiny.tiny_path())
    if name == SMOLLM2:
        return str(smollm2.smollm2_path())
    if name.startswith("builtin:"):
        raise RecipeError(f"model.name: unknown built-in model {name!r}; the built-in ones are {TINY} and "
                          f"{SMOLLM2}")
    return name


def config_path(name: str) -> Path | None:
    """The shipped config for a hub id (matched on its last path part, case-insensitive, ignoring -bnb-4bit
    suffixes), or a local folder's config.json; None when unknown."""
    if name == TINY:
        return None
    if name == SMOLLM2:  # converted locally from its GGUF: the release's architecture
        return CONFIGS / "SmolLM2-135M-Instruct.json"
    local = Path(name) / "config.json"
    if local.is_file():
        return local
    stem = name.rstrip("/").rsplit("/", 1)[-1].lower()
    for suffix in ("-unsloth-bnb-4bit", "-bnb-4bit"):
        stem = stem.removesuffix(suffix)
    for path in CONFIGS.glob("*.json"):
        if path.stem.lower() == stem:
            return path
    return None


def documented_stops(name: str) -> dict | None:
    """The documented stop tokens of a recipe model (models/turn_ends.json), matched as `config_path` matches
    configs; None when the kit documents none."""
    path = config_path(name)
    key = path.stem if path is not None else None
    table = json.loads(TURN_ENDS.read_text())
    return table.get(key) if key else None
