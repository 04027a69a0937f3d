"""A model loaded for chat: a run's trained adapter (or a recipe's base model) answering with the recipe's system
prompt, streamed token by token; "compare" answers one question with the base model and the trained adapter side
by side, with one model in memory (the PEFT adapter switched off for the base answer).

Generation settings come from the recipe, never from here: the token budget is eval.max_new_tokens (else
grpo.max_completion_length, what the model was trained to fit in); decoding is greedy like `kit eval`, or sampled
at grpo.temperature, what GRPO trained with.

Importing this module imports no torch; `ChatSession.load` does.
"""

from __future__ import annotations

import gc
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kit import runs
from kit.errors import KitError
from kit.models.engines import Generator
from kit.models.loading import load_for_inference
from kit.models.plan import plan as plan_for
from kit.recipe import Recipe, load_recipe
from kit.task import answers, data


@dataclass(frozen=True)
class Answer:
    """One finished answer and what the kit reads out of it."""
    text: str
    extracted: str | None  # kit.data.extract_answer: what correctness_reward would compare


def answer_of(text: str) -> Answer:
    return Answer(text, answers.extract_answer(text))


class ChatSession:
    """One loaded model. Build with `ChatSession.load(run_or_recipe)`; `close()` frees its memory."""

    def __init__(self, recipe: Recipe, adapter: Path | None, label: str, generator):
        self.recipe, self.adapter, self.label = recipe, adapter, label
        self.generator = generator
        # One generation at a time: two browser tabs share this model, and HF generate is not re-entrant.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: str | Path) -> "ChatSession":
        """`source` is a run folder (its latest adapter on its resolved recipe) or a recipe file (its base
        model)."""
        source = Path(source)
        if source.is_dir():
            run = runs.open_run(source)
            adapter = runs.latest_adapter(run)
            if adapter is None:
                raise KitError(f"{run.name} has no adapter yet (it is saved when a stage ends); pick a finished or "
                               "stopped run, or the base model")
            recipe, label = load_recipe(run / runs.RECIPE), f"{run.name} (trained adapter)"
            trained = runs.trained_plan(run)  # its weights as they were trained (nf4 or full precision)
        else:
            recipe, adapter, label, trained = load_recipe(source), None, f"{source.stem} base model", None

        _, _, engine = load_for_inference(recipe, adapter, plan_for(recipe, trained=trained))
        # The chat template gets what training used (e.g. Qwen3's enable_thinking), so chat prompts match rollouts.
        generator = Generator(engine, template_kwargs=data.template_kwargs(recipe.data))
        return cls(recipe, adapter, label, generator)

    # --- generation settings, all from the recipe ---------------------------------------------------------------

    @property
    def max_new_tokens(self) -> int:
        return self.recipe.eval.max_new_tokens or self.recipe.grpo.max_completion_length

    def temperature(self, sample: bool) -> float:
        return self.recipe.grpo.temperature if sample else 0.0

    @property
    def system_prompt(self) -> str:
        return self.recipe.data.system_prompt

    def messages(self, history: list[dict], question: str) -> list[dict]:
        """System prompt + earlier turns (role/content) + the new question."""
        turns = [{"role": m["role"], "content": m["content"]} for m in history
                 if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)]
        prompt = data.to_prompt(question, self.system_prompt)
        return prompt[:-1] + turns + prompt[-1:]

    # --- answering ----------------------------------------------------------------------------------------------

    def stream(self, history: list[dict], question: str, sample: bool = False,
               adapter: bool = True) -> Iterator[str]:
        """The answer so far, growing as tokens arrive. `adapter=False` answers with the base model."""
        generator = self.generator  # one reference for the whole answer: Unload may clear the attribute meanwhile
        if generator is None:
            raise KitError("the chat model was unloaded; load it again")
        with self._lock, generator.use_adapter(adapter):
            yield from generator.stream(self.messages(history, question), self.max_new_tokens,
                                        self.temperature(sample))

    def compare(self, question: str, sample: bool = False) -> Iterator[tuple[str, str]]:
        """(base answer so far, trained answer so far): the base answer streams first, then the trained one."""
        if self.adapter is None:
            raise KitError("compare needs a trained adapter: load a run (not a base model) in the Chat tab")
        base = ""
        for base in self.stream([], question, sample, adapter=False):
            yield base, ""
        for trained in self.stream([], question, sample, adapter=True):
            yield base, trained

    def close(self) -> None:
        """Drop the model and give its memory back (GPU memory too, so a run can start)."""
        # No lock: an answer still streaming keeps its own reference and finishes; the memory goes after it.
        self.generator = None
        gc.collect()
        torch = sys.modules.get("torch")  # only loaded models import torch; nothing to free otherwise
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
