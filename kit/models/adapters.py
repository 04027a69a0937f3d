"""Loading a saved LoRA adapter's weights into a PEFT model that is already built. A module of its own, below both
kit.models.loading (continuing a pipeline stage, resuming) and kit.models.engines (an engine switching adapters),
so neither imports the other for it."""

from __future__ import annotations

from pathlib import Path

from kit.errors import KitError


def load_adapter_weights(model, adapter: Path) -> None:
    """Load the adapter saved at `adapter` into `model` in place of the adapter weights it holds (same shape)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        result = set_peft_model_state_dict(model, load_file(str(Path(adapter) / "adapter_model.safetensors")))
    except (RuntimeError, KeyError) as e:  # shapes differ (another LoRA rank or model), or modules_to_save do
        raise KitError(f"{adapter}: adapter does not fit this model ({str(e).splitlines()[-1].strip()[:160]}); "
                       "was it trained with another recipe (model or LoRA settings)?") from None
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise KitError(f"{adapter}: adapter does not fit this model ({len(unexpected)} unexpected weights, e.g. "
                       f"{unexpected[0]}); was it trained from another recipe?")
