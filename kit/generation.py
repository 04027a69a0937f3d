"""Answers from a model: batched HF generation, or vLLM through Unsloth's `fast_generate` when the model was
loaded with fast_inference. Used by evaluation, rejection sampling, evaluation during training and chat.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Callable, Iterator


class Generator:
    """Generate answers to chat prompts (lists of messages).

    `lora_request` (vLLM only) selects the adapter; `use_adapter(False)` answers with the base model (PEFT
    adapters disabled / no lora_request), which is how "compare" puts base and trained side by side with one model
    in memory.
    """

    def __init__(self, model, tokenizer, lora_request=None, template_kwargs: dict | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.lora_request = lora_request
        self.template_kwargs = template_kwargs or {}  # e.g. {"enable_thinking": False} for Qwen3
        self.use_vllm = hasattr(model, "fast_generate") and getattr(model, "vllm_engine", None) is not None
        self._adapter_on = True

    @classmethod
    def of_training_model(cls, model, tokenizer, scratch: Path, template_kwargs: dict | None = None) -> "Generator":
        """A generator for a model being trained. vLLM holds its own copy of the weights, so it is handed the
        current adapter (saved to `scratch`) as a LoRA request; HF generation uses the live weights."""
        gen = cls(model, tokenizer, template_kwargs=template_kwargs)
        if gen.use_vllm:
            model.save_lora(str(scratch))
            gen.lora_request = model.load_lora(str(scratch))
        return gen

    @contextlib.contextmanager
    def use_adapter(self, on: bool):
        previous, self._adapter_on = self._adapter_on, on
        ctx = contextlib.nullcontext()
        if not on and not self.use_vllm and hasattr(self.model, "disable_adapter"):
            ctx = self.model.disable_adapter()
        try:
            with ctx:
                yield self
        finally:
            self._adapter_on = previous

    def _texts(self, prompts: list[list[dict]]) -> list[str]:
        return [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True,
                                                   **self.template_kwargs) for p in prompts]

    def generate(self, prompts: list[list[dict]], max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, n: int = 1, batch_size: int = 16,
                 on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        """`n` answers per prompt (temperature 0: greedy, then n must be 1)."""
        if temperature == 0 and n != 1:
            raise ValueError("greedy decoding gives one answer per prompt; use temperature > 0 for n > 1")
        if self.use_vllm:
            return self._generate_vllm(prompts, max_new_tokens, temperature, top_p, n, on_batch)
        return self._generate_hf(prompts, max_new_tokens, temperature, top_p, n, batch_size, on_batch)

    def _generate_vllm(self, prompts, max_new_tokens, temperature, top_p, n, on_batch):
        from vllm import SamplingParams

        params = SamplingParams(temperature=temperature, top_p=top_p, n=n, max_tokens=max_new_tokens)
        # Token ids, not text: the chat template already holds BOS, and vLLM would add a second one.
        inputs = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]}
                  for t in self._texts(prompts)]
        outputs = self.model.fast_generate(inputs, sampling_params=params,
                                           lora_request=self.lora_request if self._adapter_on else None)
        if on_batch:
            on_batch(len(prompts))
        return [[o.text for o in out.outputs] for out in outputs]

    def _generate_hf(self, prompts, max_new_tokens, temperature, top_p, n, batch_size, on_batch):
        import torch

        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        side, tok.padding_side = tok.padding_side, "left"
        results: list[list[str]] = []
        try:
            for start in range(0, len(prompts), batch_size):
                chunk = self._texts(prompts[start:start + batch_size])
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, num_return_sequences=n)
                if temperature > 0:
                    kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                with torch.no_grad():
                    out = model.generate(**enc, **kwargs)
                texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                results += [texts[i * n:(i + 1) * n] for i in range(len(chunk))]
                if on_batch:
                    on_batch(len(chunk))
        finally:
            tok.padding_side = side
            model.train(was_training)
        return results

    def stream(self, messages: list[dict], max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        """The answer so far, growing token by token (vLLM: in one piece)."""
        if self.use_vllm:
            yield self.generate([messages], max_new_tokens, temperature)[0][0]
            return
        import torch
        from transformers import TextIteratorStreamer

        tok, model = self.tokenizer, self.model
        model.eval()
        enc = tok(self._texts([messages]), return_tensors="pt", add_special_tokens=False).to(model.device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**enc, max_new_tokens=max_new_tokens, streamer=streamer, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        error: list[BaseException] = []

        def run():
            try:
                with torch.no_grad():
                    model.generate(**kwargs)
            except BaseException as e:  # surfaced below, in the caller's thread
                error.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text
        thread.join()
        if error:
            raise error[0]
