"""Answers from a model. One engine type (`Engine`), three ways to generate, picked once by the plan
(kit.models.loading.load_for_inference, or for a model being trained `training_engine`):

- `HFGenerate`: the PEFT model generates (batched, token streaming); adapter off = `model.disable_adapter()`;
- `UnslothVLLM`: Unsloth's vLLM (`model.fast_generate`), the adapter as a LoRA request;
- `InProcessVLLM`: a `vllm.LLM` in this process into which the PEFT model's merged weights are loaded before it
  answers (transformers backend; during GRPO it is TRL's colocated engine).

`Generator` renders chat prompts, holds the stop ids and hands both to its engine. Used by evaluation, rejection
sampling, evaluation during training and chat. HF generation and the in-process engine return texts decoded by the
model's tokenizer, so their result files do not depend on which of them answered; Unsloth's path returns the text
vLLM detokenized.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from kit.errors import KitError
from kit.models.adapters import load_adapter_weights
from kit.models.catalog import model_path
from kit.models.plan import Hardware, Plan
from kit.models.stopping import stop_ids
from kit.recipe import ModelSpec


@dataclass(frozen=True)
class Sampling:
    """How answers are drawn, the same on every engine. Temperature 0: greedy."""
    max_new_tokens: int
    stop_ids: list[int]  # kit.models.stopping.stop_ids: where every answer ends, on every engine
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None  # vLLM samples with it; HF draws from torch's generator, which the caller seeds


class Engine:
    """What answers for a model: `generate` over rendered prompts, with the adapter on or off (`adapter`), and
    `load_adapter` to answer with another saved adapter of the same shape."""

    name = ""  # in words: `kit eval` prints it, tests and docs read it

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.adapter_on = True

    def generate(self, texts: list[str], s: Sampling, batch_size: int = 16,
                 on_batch: Callable[[int], None] | None = None) -> list[list[str]]:
        """`s.n` answers to each rendered prompt; `on_batch(k)` after each k prompts answered."""
        raise NotImplementedError

    def stream(self, text: str, s: Sampling) -> Iterator[str]:
        """The answer so far, growing as it is generated; engines that cannot stream give it in one piece."""
        yield self.generate([text], s)[0][0]

    def load_adapter(self, path: Path) -> None:
        """From now on answer with the adapter saved at `path` (the same shape as the one loaded)."""
        raise NotImplementedError

    def follow_training(self, scratch: Path) -> None:
        """Answer with the weights the model being trained holds now (`scratch`: a folder this may write)."""

    @contextlib.contextmanager
    def adapter(self, on: bool):
        """Within the block, answers come from the adapter (on) or from the base model (off)."""
        previous, self.adapter_on = self.adapter_on, on
        try:
            with self._adapter_context(on):
                yield
        finally:
            self.adapter_on = previous

    def _adapter_context(self, on: bool):
        return contextlib.nullcontext()  # vLLM engines read `adapter_on` when they answer


def _token_ids(tokenizer, texts: list[str]) -> list[dict]:
    # Token ids, not text: the chat template already holds BOS, and vLLM would add a second one.
    return [{"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]


def _sampling_params(s: Sampling):
    from vllm import SamplingParams

    return SamplingParams(temperature=s.temperature, top_p=s.top_p, n=s.n, max_tokens=s.max_new_tokens,
                          seed=s.seed if s.temperature > 0 else None, stop_token_ids=s.stop_ids)


class HFGenerate(Engine):
    """The PEFT model generates with its live weights (transformers' `generate`)."""

    name = "HF generate"

    def _adapter_context(self, on: bool):
        # A model loaded without an adapter (a recipe's base model) is the base model already.
        if on or not hasattr(self.model, "disable_adapter"):
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    def load_adapter(self, path: Path) -> None:
        load_adapter_weights(self.model, path)

    def _decoding(self, s: Sampling) -> dict:
        if s.temperature > 0:
            return dict(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        return dict(do_sample=False, temperature=None, top_p=None, top_k=None)

    def generate(self, texts, s, batch_size=16, on_batch=None):
        import torch

        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        side, tok.padding_side = tok.padding_side, "left"
        results: list[list[str]] = []
        try:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                with torch.no_grad():
                    out = model.generate(**enc, max_new_tokens=s.max_new_tokens, pad_token_id=tok.pad_token_id,
                                         eos_token_id=s.stop_ids, num_return_sequences=s.n, **self._decoding(s))
                decoded = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                results += [decoded[i * s.n:(i + 1) * s.n] for i in range(len(chunk))]
                if on_batch:
                    on_batch(len(chunk))
        finally:
            tok.padding_side = side
            model.train(was_training)
        return results

    def stream(self, text, s):
        import torch
        from transformers import TextIteratorStreamer

        tok, model = self.tokenizer, self.model
        model.eval()
        enc = tok([text], return_tensors="pt", add_special_tokens=False).to(model.device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        # Sampled chat passes no top_p: the model's generation_config keeps deciding it, as it always has.
        decoding = dict(do_sample=True, temperature=s.temperature) if s.temperature > 0 else self._decoding(s)
        kwargs = dict(**enc, max_new_tokens=s.max_new_tokens, streamer=streamer, pad_token_id=tok.pad_token_id,
                      eos_token_id=s.stop_ids, **decoding)
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
        answer = ""
        for piece in streamer:
            answer += piece
            yield answer
        thread.join()
        if error:
            raise error[0]


class UnslothVLLM(Engine):
    """Unsloth's vLLM engine (`model.fast_generate`, the model loaded with fast_inference); the adapter is a LoRA
    request, so adapter off = no request."""

    name = "vLLM (Unsloth fast_generate)"

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer)
        self.lora_request = None  # None until an adapter is loaded: the base model answers

    def load_adapter(self, path: Path) -> None:
        self.lora_request = self.model.load_lora(str(path))

    def follow_training(self, scratch: Path) -> None:
        # vLLM holds its own copy of the weights: it is handed the current adapter, saved to `scratch`.
        self.model.save_lora(str(scratch))
        self.load_adapter(scratch)

    def generate(self, texts, s, batch_size=16, on_batch=None):
        outputs = self.model.fast_generate(_token_ids(self.tokenizer, texts), sampling_params=_sampling_params(s),
                                           lora_request=self.lora_request if self.adapter_on else None)
        if on_batch:
            on_batch(len(texts))
        return [[o.text for o in out.outputs] for out in outputs]


class InProcessVLLM(Engine):
    """An in-process vLLM engine (a `vllm.LLM` built with external_launcher, as TRL's colocate mode builds it) whose
    weights follow the PEFT model: before it answers, the adapter is merged and the merged weights are loaded into
    vLLM, the way TRL syncs its colocated engine after each optimizer step. A LoRA request would not do: vLLM
    rejects adapters with modules_to_save (the demo's embed_tokens/lm_head)."""

    def __init__(self, model, tokenizer, llm, name: str):
        super().__init__(model, tokenizer)
        self.llm, self.name = llm, name
        self.loaded: bool | None = None  # adapter on/off of the weights vLLM holds now (None: not ours)

    def load_adapter(self, path: Path) -> None:
        load_adapter_weights(self.model, path)
        self.loaded = None

    def _load_weights(self) -> None:
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, tensor in vllm_weights(self.model, self.adapter_on):
            runner.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()
        self.loaded = self.adapter_on

    def generate(self, texts, s, batch_size=16, on_batch=None):
        if self.loaded != self.adapter_on:
            self._load_weights()
        outputs = self.llm.generate(_token_ids(self.tokenizer, texts), sampling_params=_sampling_params(s),
                                    use_tqdm=False)
        if on_batch:
            on_batch(len(texts))
        # Decoded here, as HF generation decodes: vLLM's incremental detokenizer holds back a trailing partial
        # UTF-8 byte that batch_decode shows as U+FFFD, so the texts (and result files) would differ.
        return [[self.tokenizer.decode(list(o.token_ids), skip_special_tokens=True) for o in out.outputs]
                for out in outputs]


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


# ---------------------------------------------------------------------------------------------------------------
# The engine of a model being trained

# model -> how to build its engine. A recipe, not an engine: an engine holds its model, and a value that holds its
# key would keep the model alive for good.
_TRAINING_ENGINES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def attach_engine(model, engine: type[Engine], **kwargs) -> None:
    """From now on, the model being trained answers through `engine(model, tokenizer, **kwargs)`: Unsloth's vLLM
    when the plan loaded it (kit.models.loading.load), TRL's colocated engine once GRPOTrainer has built it, or an
    in-process engine started for rejection sampling. Without one, HF generation answers."""
    _TRAINING_ENGINES[model] = functools.partial(engine, **kwargs)


def attached_engine(model) -> Callable | None:
    """What `attach_engine` recorded for the model (or for the model a trainer wrapped), or None."""
    return _TRAINING_ENGINES.get(model) or _TRAINING_ENGINES.get(getattr(model, "module", None) or model)


def training_engine(model, tokenizer, scratch: Path) -> Engine:
    """The engine that answers for a model being trained, resolved when answers are asked for (TRL's colocated
    engine exists only inside TRL's trainer), holding the weights the model has now: vLLM keeps its own copy, so
    Unsloth's is handed the current adapter (saved to `scratch`) and an in-process engine reloads the merged
    weights before it answers; HF generation uses the live weights."""
    engine = (attached_engine(model) or HFGenerate)(model, tokenizer)
    engine.follow_training(scratch)
    return engine


# ---------------------------------------------------------------------------------------------------------------
# Chat prompts in, texts out


class Generator:
    """Generate answers to chat prompts (lists of messages) through an engine (kit.models.loading.load_for_inference
    returns the one the plan picked). `use_adapter(False)` answers with the base model, which is how "compare"
    puts base and trained side by side with one model in memory."""

    def __init__(self, engine: Engine, template_kwargs: dict | None = None):
        self.engine = engine
        self.model, self.tokenizer = engine.model, engine.tokenizer
        self.template_kwargs = template_kwargs or {}  # e.g. {"enable_thinking": False} for Qwen3
        # Where every answer ends, on every engine: the turn-end token and the model's other eos ids
        # (kit.models.stopping.prepare put them in the model's generation_config when it was loaded).
        self.stop_ids = stop_ids(engine.model, engine.tokenizer)

    @property
    def engine_name(self) -> str:
        """Which engine answers, in words (kit eval prints it)."""
        return self.engine.name

    @classmethod
    def of_training_model(cls, model, tokenizer, scratch: Path, template_kwargs: dict | None = None) -> "Generator":
        """A generator for a model being trained, with its current weights (`training_engine`)."""
        return cls(training_engine(model, tokenizer, scratch), template_kwargs)

    @contextlib.contextmanager
    def use_adapter(self, on: bool):
        with self.engine.adapter(on):
            yield self

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
        s = Sampling(max_new_tokens, self.stop_ids, temperature, top_p, n, seed)
        return self.engine.generate(self._texts(prompts), s, batch_size, on_batch)

    def stream(self, messages: list[dict], max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        """The answer so far, growing token by token (vLLM: in one piece)."""
        yield from self.engine.stream(self._texts([messages])[0], Sampling(max_new_tokens, self.stop_ids,
                                                                           temperature))


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
