"""Training: the one flow (flow.py) and what it hands work to: TRL arguments, rejection sampling, the run tracker, trainer callbacks, resume and failure handling."""
