"""Consumer-GPU GRPO fine-tuning kit: recipes -> Unsloth/TRL GRPO -> run folder -> CLI and app.

Importing `kit` imports no torch; heavy modules (model, train, callbacks, generation) import it when used.
"""

__version__ = "0.1.0"
