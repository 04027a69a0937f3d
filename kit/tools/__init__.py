"""Tools around a run: benchmarks on random weights, export (LoRA, merged, GGUF), the install doctor."""
