"""Models: the catalog of known and builtin models, the plan for this machine, loading, stop ids, generation engines, version differences, the memory estimator, and the builders of local models."""
