"""Answers from a model: batched HF generation, vLLM through Unsloth's `fast_generate` when the model was loaded
with fast_inference, or (transformers backend) an in-process vLLM engine holding the PEFT model's merged weights.
Used by evaluation, rejection sampling, evaluation during training and chat. Every engine returns the same thing:
texts decoded by the model's tokenizer, so result files do not depend on which engine answered.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from pathlib import Path
from typing import Callable, Iterator

from kit.errors import KitError
from kit.models.catalog import model_path
from kit.models.plan import Hardware, Plan
from kit.models.stopping import stop_ids
from kit.recipe import ModelSpec


class VLLMEngine:
    """An in-process vLLM engine (a `vllm.LLM` built with external_launcher, as TRL's colocate mode builds it) whose
    weights follow a PEFT model: `load()` merges the adapter and loads the merged weights into vLLM, the way TRL
    syncs its colocated engine after each optimizer step. A LoRA request would not do: vLLM rejects adapters with
    modules_to_save (the demo's embed_tokens/lm_head)."""

    def __init__(self, llm, name: str):
        self.llm, self.name = llm, name
        self.loaded: tuple | None = None  # (id(model), adapter on) of the weights vLLM holds now

    def load(self, model, adapter_on: bool) -> None:
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, tensor in vllm_weights(model, adapter_on):
            runner.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()
        self.loaded = (id(model), adapter_on)


def vllm_weights(model, adapter_on: bool = True) -> Iterator[tuple[str, "object"]]:
    """(name, tensor) under vLLM's names: the base weights, with the LoRA adapter merged in (adapter_on) or not,
    and modules_to_save as trained (adapter_on) or as in the base model."""
    if not hasattr(model, "peft_config"):
        for name, param in model.named_parameters():
            yield name, param.data
        return
    if adapter_on:
        model.merge_adapter()
    try:
        for name, param in model.named_parameters():
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if ".lora_" in name:
                continue
            if ".modules_to_save.default." in name:
                if not adapter_on:
                    continue
                name = name.replace(".modules_to_save.default.", ".")
            elif ".original_module." in name:
                if adapter_on:
                    continue
                name = name.replace(".original_module.", ".")
            yield name, param.data
    finally:
        if adapter_on:
            model.unmerge_adapter()


_TRAINING_ENGINES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def attach_engine(model, engine: VLLMEngine) -> None:
    """Make `engine` (TRL's colocated vLLM during GRPO) the one that answers for the model being trained:
    evaluation during training and rejection sampling then generate with it, with the current weights loaded."""
    _TRAINING_ENGINES[model] = engine


def attached_engine(model) -> VLLMEngine | None:
    return _TRAINING_ENGINES.get(model) or _TRAINING_ENGINES.get(getattr(model, "module", None) or model)


class Generator:
    """Generate answers to chat prompts (lists of messages).

    `lora_request`: the third thing kit.models.loading.load_for_inference returns. Unsloth + vLLM: the LoRA request that
    selects the adapter; transformers + vLLM: a VLLMEngine (the model's merged weights are loaded into it before it
    answers). `use_adapter(False)` answers with the base model (PEFT adapters disabled / no lora_request / base
    weights loaded), which is how "compare" puts base and trained side by side with one model in memory.
    """

    def __init__(self, model, tokenizer, lora_request=None, template_kwargs: dict | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.engine = lora_request if isinstance(lora_request, VLLMEngine) else None
        self.lora_request = None if self.engine else lora_request
        self.template_kwargs = template_kwargs or {}  # e.g. {"enable_thinking": False} for Qwen3
        self.use_vllm = self.engine is not None or (hasattr(model, "fast_generate")
                                                    and getattr(model, "vllm_engine", None) is not None)
        self._adapter_on = True
        # Where every answer ends, on every engine: the turn-end token and the model's other eos ids
        # (kit.models.stopping.prepare put them in the model's generation_config when it was loaded).
        self.stop_ids = stop_ids(model, tokenizer)

    @property
    def engine_name(self) -> str:
        """Which engine answers, in words (kit eval prints it)."""
        if self.engine is not None:
            return self.engine.name
        return "vLLM (Unsloth fast_generate)" if self.use_vllm else "HF generate"

    @classmethod
    def of_training_model(cls, model, tokenizer, scratch: Path, template_kwargs: dict | None = None) -> "Generator":
        """A generator for a model being trained. vLLM holds its own copy of the weights, so it is handed the
        current adapter (saved to `scratch`) as a LoRA request; HF generation uses the live weights."""
        engine = attached_engine(model)
        if engine is not None:  # transformers backend: TRL's colocated engine, the current weights loaded first
            engine.loaded = None
            return cls(model, tokenizer, engine, template_kwargs)
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
                 on_batch: Callable[[int], None] | None = None, seed: int | None = None) -> list[list[str]]:
        """`n` answers per prompt (temperature 0: greedy, then n must be 1). `seed` makes vLLM's sampling
        repeatable; HF generation draws from torch's generator, which the caller seeds."""
        if temperature == 0 and n != 1:
            raise ValueError("greedy decoding gives one answer per prompt; use temperature > 0 for n > 1")
        if self.engine is not None or self.use_vllm:
            from vllm import SamplingParams

            params = SamplingParams(temperature=temperature, top_p=top_p, n=n, max_tokens=max_new_tokens,
                                    seed=seed if temperature > 0 else None, stop_token_ids=self.stop_ids)
            run = self._generate_engine if self.engine is not None else self._generate_vllm
            return run(prompts, params, on_batch)
        return self._generate_hf(prompts, max_new_tokens, temperature, top_p, n, batch_size, on_batch)

    def _generate_vllm(self, prompts, params, on_batch):
        # Token ids, not text: the chat template already holds BOS, and vLLM would add a second one.
        inputs = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]}
                  for t in self._texts(prompts)]
        outputs = self.model.fast_generate(inputs, sampling_params=params,
                                           lora_request=self.lora_request if self._adapter_on else None)
        if on_batch:
            on_batch(len(prompts))
        return [[o.text for o in out.outputs] for out in outputs]

    def _generate_engine(self, prompts, params, on_batch):
        if self.engine.loaded != (id(self.model), self._adapter_on):
            self.engine.load(self.model, self._adapter_on)
        inputs = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]}
                  for t in self._texts(prompts)]
        outputs = self.engine.llm.generate(inputs, sampling_params=params, use_tqdm=False)
        if on_batch:
            on_batch(len(prompts))
        # Decoded here, as HF generation decodes: vLLM's incremental detokenizer holds back a trailing partial
        # UTF-8 byte that batch_decode shows as U+FFFD, so the texts (and result files) would differ.
        return [[self.tokenizer.decode(list(o.token_ids), skip_special_tokens=True) for o in out.outputs]
                for out in outputs]

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
                              eos_token_id=self.stop_ids, num_return_sequences=n)
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
                      eos_token_id=self.stop_ids)
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


# ---------------------------------------------------------------------------------------------------------------
# Starting vLLM in this process


def vllm_environment(hw: Hardware) -> None:
    """What vLLM's CPU build needs on a small machine, set before an engine starts (values already set are kept),
    and the one work-around of vLLM internals the kit carries (below)."""
    if hw.cuda:
        return
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")       # GiB of KV cache; the default 4 is a small box's RAM
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # the default keeps a core free: half of 2 cores
    _keep_vllm_cpu_weights()


def _keep_vllm_cpu_weights() -> None:
    """Work-around (vLLM CPU build 0.32): after loading, vLLM repacks each linear layer's weight for its oneDNN /
    SGL kernels and replaces the Parameter by an empty one without `weight_loader` (the LM head keeps its weight
    but computes from the packed copy). Weights loaded later (TRL's sync after each step, the kit's adapter) then
    fail with `'Parameter' object has no attribute 'weight_loader'` or are silently ignored. Which layers get packed
    depends on the CPU (AVX-512 BF16 / AMX) and dtype. So on CPU every unquantized linear layer computes with
    torch's F.linear on its own weight. tests/test_vllm.py (weight sync) fails if this stops working."""
    import torch
    from vllm.model_executor.layers import utils as vllm_layer_utils

    if not hasattr(vllm_layer_utils, "dispatch_cpu_unquantized_gemm"):
        raise KitError("vLLM's CPU build changed (no vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm): "
                       "the kit cannot load trained weights into it; use the CPU build named in docs/install.md")

    def plain_linear(layer, remove_weight: bool) -> None:
        layer.cpu_linear = torch.nn.functional.linear

    vllm_layer_utils.dispatch_cpu_unquantized_gemm = plain_linear


def vllm_dtype(p: Plan) -> str:
    """vLLM's dtype: the plan's on a GPU; bfloat16 on CPU, which is what TRL's colocated engine runs there (vLLM
    downcasts float32 checkpoints on CPU), so evaluation answers like the engine that generated the rollouts."""
    return p.dtype if p.hardware.cuda else "bfloat16"


def start_vllm(m: ModelSpec, p: Plan):
    """A vLLM engine in this process, set up as TRL's colocate mode does (external_launcher: the model lives in this
    process, so the trained weights can be loaded into it). Used for evaluation, chat and sampling on the
    transformers backend; during GRPO training TRL's own colocated engine is used instead."""
    import socket

    vllm_environment(p.hardware)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if not os.environ.get("MASTER_PORT"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    from vllm import LLM

    return LLM(model=model_path(m.name), dtype=vllm_dtype(p), gpu_memory_utilization=m.gpu_memory_utilization,
               max_model_len=m.max_seq_length, max_num_batched_tokens=max(4096, m.max_seq_length),
               distributed_executor_backend="external_launcher", seed=0)
