"""A run's GGUF exports in llama.cpp itself: does llama.cpp load the file, tokenize the chat prompts as the model's
own tokenizer does, stop at the turn end, and give the merged model's greedy tokens? Prints numbers, asserts nothing.

    python benchmarks/gguf_llama_cpp.py RUN [--types f16 q8_0]

Needs llama.cpp's Python binding, which PyPI has only as source (about 20 minutes to compile on 2 cores; no wheel
here runs on this machine's glibc), so it is no part of `make test`:

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
        pip install llama-cpp-python==0.3.36

The prompts are benchmarks/real_prompts.py's (tests/test_gguf.py's too); the reference is the run's merged16 export
in transformers, fp32, one prompt at a time, greedy, 32 new tokens.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NEW_TOKENS = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--types", nargs="+", default=["f16", "q8_0"])
    args = parser.parse_args()

    import torch
    from llama_cpp import Llama
    from real_prompts import QUESTIONS
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kit.tools.export import export

    out = Path(tempfile.mkdtemp(prefix="kit-gguf-llama-cpp-"))
    merged = export(args.run, "merged16", out / "merged16")
    tok = AutoTokenizer.from_pretrained(merged)
    hf = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    stop = list(dict.fromkeys([tok.eos_token_id, *([hf.generation_config.eos_token_id] if isinstance(
        hf.generation_config.eos_token_id, int) else hf.generation_config.eos_token_id)]))
    want = []
    for p in prompts:
        ids = tok(p, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            o = hf.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=stop,
                            pad_token_id=tok.pad_token_id)
        want.append(o[0, ids.shape[1]:].tolist())

    for q in args.types:
        folder = export(args.run, "gguf", out / q, q)
        file = next(folder.glob("*.gguf"))
        start = time.monotonic()
        llm = Llama(model_path=str(file), n_ctx=512, n_threads=2, verbose=False)
        loaded = time.monotonic() - start
        same_tok = same_gen = stopped = 0
        for p, w in zip(prompts, want):
            ids = llm.tokenize(p.encode(), add_bos=False, special=True)
            same_tok += ids == tok(p, add_special_tokens=False)["input_ids"]
            got = []
            for t in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                got.append(t)
                if t in stop or len(got) >= NEW_TOKENS:  # where transformers stops
                    stopped += t == llm.token_eos()
                    break
            same_gen += got == w
        print(f"{q}: {file.stat().st_size / 1e6:.0f} MB, loaded in llama.cpp in {loaded:.1f} s, eos id "
              f"{llm.token_eos()}; tokenization = transformers' on {same_tok}/{len(prompts)}; greedy tokens = the "
              f"merged model's on {same_gen}/{len(prompts)}; {stopped}/{len(prompts)} answers ended at eos "
              f"within {NEW_TOKENS} tokens", flush=True)
        llm.close()


if __name__ == "__main__":
    main()
