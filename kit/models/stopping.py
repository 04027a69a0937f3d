"""Where a model's answer ends: the one place that decides a model's stop ids, from what the model ships.

A model says three things about stopping, and they need not agree:
- the tokenizer's `eos_token` (Gemma 3 may say `<eos>`, SmolLM2's GGUF says `<|im_start|>`);
- `generation_config.json`'s `eos_token_id`, an id or a list (Gemma 3 `[1, 106]`, Llama 3.2 `[128001, 128008,
  128009]`, Qwen2.5 `[151645, 151643]`);
- the chat template, which closes every assistant turn with a token (`<|im_end|>`, `<|eot_id|>`,
  `<end_of_turn>`): the one an instruct model was trained to emit when its answer is done.

The turn-end token is found by looking: a conversation whose assistant turn is a marker is rendered, and the
token right after the marker is the turn end. `prepare()` then makes the tokenizer's eos that token (TRL's
GRPOTrainer stops HF rollouts, cuts the completion mask and computes `clipped_ratio` on `tokenizer.eos_token_id`
alone, and SFT targets end with it) and puts every stop id into `model.generation_config.eos_token_id`, which
every generation path of the kit reads (`stop_ids`): HF generate, vLLM's `stop_token_ids`, Unsloth's
`fast_generate`, TRL's vLLM rollouts (`generation_kwargs`).

Importing this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.errors import KitError
from kit.models import catalog, smollm2

MARK = "KITTURNMARK"  # the assistant's content in the probe conversation: plain text in every tokenizer


@dataclass(frozen=True)
class Stops:
    turn_end: str | None    # the token that closes an assistant turn (None: the template shows none)
    turn_end_id: int | None
    ids: tuple[int, ...]    # every id that ends an answer: turn end first, then the tokenizer's and the config's
    tokenizer_eos: str | None
    config_eos: tuple[int, ...]

    def describe(self, tokenizer) -> str:
        """One line for `kit doctor` and the training log."""
        names = ", ".join(f"{tokenizer.convert_ids_to_tokens(i)} ({i})" for i in self.ids)
        if self.turn_end is None:
            return f"the chat template shows no turn-end token; answers stop at {names}"
        return (f"a turn ends with {self.turn_end} (id {self.turn_end_id}, read from the chat template); answers "
                f"stop at {names} (tokenizer eos {self.tokenizer_eos}, generation_config eos "
                f"{list(self.config_eos) or 'none'})")


def _as_ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def turn_end_token(tokenizer, template_kwargs: dict | None = None) -> str | None:
    """The special token the chat template writes right after an assistant's words, or None.

    The token must be one the tokenizer treats as a single added/special token: a template that closes a turn
    with plain text (a newline) has no turn-end token to stop on."""
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, **(template_kwargs or {}))
    except Exception:  # noqa: BLE001  a template may refuse the probe (e.g. it wants a system turn): look no further
        return None
    at = text.rfind(MARK)
    if at < 0:
        return None
    suffix = text[at + len(MARK):].lstrip(" ")
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"][:2] if suffix else []
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    for i in ids:
        if i in special:
            return tokenizer.convert_ids_to_tokens(i)
    return None


def stops(tokenizer, generation_config=None, template_kwargs: dict | None = None) -> Stops:
    """What ends this model's answers (see the module docstring)."""
    turn_end = turn_end_token(tokenizer, template_kwargs)
    turn_end_id = tokenizer.convert_tokens_to_ids(turn_end) if turn_end is not None else None
    config_eos = _as_ids(getattr(generation_config, "eos_token_id", None))
    ids = [i for i in (turn_end_id, tokenizer.eos_token_id, *config_eos) if i is not None]
    return Stops(turn_end, turn_end_id, tuple(dict.fromkeys(ids)), tokenizer.eos_token, config_eos)


def prepare(tokenizer, model, template_kwargs: dict | None = None) -> Stops:
    """Make the tokenizer's eos the turn-end token and the model's generation_config list every stop id (the
    original eos ids stay in it). Idempotent. Returns what it decided."""
    config = getattr(model, "generation_config", None)
    s = stops(tokenizer, config, template_kwargs)
    if s.turn_end is not None and tokenizer.eos_token != s.turn_end:
        tokenizer.eos_token = s.turn_end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config is not None:
        config.eos_token_id = list(s.ids) if len(s.ids) > 1 else s.ids[0]
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id
    return s


def stop_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer of a prepared model: generation_config's list, the tokenizer's eos first."""
    config = getattr(model, "generation_config", None)
    ids = [tokenizer.eos_token_id, *_as_ids(getattr(config, "eos_token_id", None))]
    return list(dict.fromkeys(i for i in ids if i is not None))


def describe_model(name: str) -> str:
    """`kit doctor RECIPE`'s turn-end line: looked up in the model's own tokenizer and generation_config where they
    are on this machine (a local folder, a built-in model already built, the Hugging Face cache), else what the kit
    documents for it, said as such. Loads no weights."""
    folder = None
    if name == catalog.TINY:
        folder = catalog.model_path(name)  # built in seconds
    elif name == catalog.SMOLLM2:
        try:
            built = smollm2.cache_path()
            folder = str(built) if (built / "config.json").is_file() else None
        except KitError as e:
            return f"unknown here: {e}"
    else:
        folder = name
    if folder is not None:
        try:
            from transformers import AutoTokenizer, GenerationConfig

            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            try:
                config = GenerationConfig.from_pretrained(folder, local_files_only=True)
            except OSError:
                config = None
            return stops(tokenizer, config).describe(tokenizer)
        except (OSError, ValueError):
            pass
    doc = catalog.documented_stops(name)
    if doc is None:
        return "unknown: the tokenizer is not on this machine and the kit documents none for this model"
    return (f"{doc['turn_end']} (id {doc['turn_end_id']}), as documented (kit/models/turn_ends.json; the tokenizer "
            f"is not on this machine to look): generation_config eos {doc['generation_config_eos']}, tokenizer eos "
            f"{doc['tokenizer_eos']}")
