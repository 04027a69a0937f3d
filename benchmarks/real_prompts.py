"""The 8 chat prompts put to the real model (builtin:smollm2-135m): by the real-model tests (tests/test_real*.py,
tests/test_gguf.py, through tests/helpers.py) and by benchmarks/gguf_llama_cpp.py, so that the GGUF figures of the
tests and of llama.cpp (docs/benchmarks.md) are over the same prompts."""

QUESTIONS = ["What is 2+2? Give only the number.", "Name a colour.", "Say hi.", "What is the capital of France?",
             "Ava has 3 apples. Ava gets 4 more apples. How many apples does Ava have now?", "Count to three.",
             "Ben has 4 boxes with 5 pens in each box. How many pens does Ben have?", "What day comes after Monday?"]
