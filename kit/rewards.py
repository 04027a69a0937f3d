"""Reward functions with TRL's signature: `f(completions, **kwargs) -> list[float]`, each value in [0, 1].

Completions may be plain strings or conversational (a list of messages, as GRPOTrainer passes them for chat
prompts). Magnitudes come from the recipe's weights (TRL `reward_weights`), never from constants in here; weight 0
logs a reward without training on it. Malformed output is normal input and scores 0; a crash in here is a bug and
stops the run.

TRL logs each as `rewards/<function name>/mean`, which is the name the recipe uses.
"""

from __future__ import annotations

import re

from kit.data import ANSWER_BLOCK, answers_match, extract_answer

# One <reasoning> block then one <answer> block, each on its own lines, nothing else around them.
_TAG_FREE = r"(?:(?!</?(?:reasoning|answer)>).)+?"
STRICT_FORMAT = re.compile(rf"^\s*<reasoning>\n{_TAG_FREE}\n</reasoning>\n<answer>\n{_TAG_FREE}\n</answer>\s*$",
                           re.DOTALL)
SOFT_FORMAT = re.compile(r"^\s*<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)


def completion_text(completion: str | list[dict]) -> str:
    """The text of one completion: a string, or the assistant content of a conversational completion."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role", "assistant") == "assistant")


def correctness_reward(completions, answer, **kwargs) -> list[float]:
    """1 when the number in the first <answer> block equals the gold answer (numerically), else 0.

    >>> correctness_reward(["<answer>\\n1,000\\n</answer>", "<answer>999</answer>"], answer=["1000", "1000"])
    [1.0, 0.0]
    """
    return [1.0 if answers_match(extract_answer(completion_text(c)), gold) else 0.0
            for c, gold in zip(completions, answer, strict=True)]


def format_reward(completions, **kwargs) -> list[float]:
    """1 for exactly `<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>` and nothing else.

    >>> format_reward(["<reasoning>\\n2+2=4\\n</reasoning>\\n<answer>\\n4\\n</answer>", "<answer>4</answer>"])
    [1.0, 0.0]
    """
    return [1.0 if STRICT_FORMAT.match(completion_text(c)) else 0.0 for c in completions]


def soft_format_reward(completions, **kwargs) -> list[float]:
    """1 when the answer starts with a <reasoning> block followed by an <answer> block, whitespace free.

    >>> soft_format_reward(["<reasoning>2+2</reasoning> <answer>4</answer>", "4"])
    [1.0, 0.0]
    """
    return [1.0 if SOFT_FORMAT.match(completion_text(c)) else 0.0 for c in completions]


def numeric_answer_reward(completions, **kwargs) -> list[float]:
    """1 when the first <answer> block holds exactly one number (negatives, decimals and fractions count).

    >>> numeric_answer_reward(["<answer>-2.5</answer>", "<answer>two</answer>"])
    [1.0, 0.0]
    """
    return [1.0 if extract_answer(completion_text(c)) is not None else 0.0 for c in completions]


def _xml_count(text: str) -> float:
    score = 0.0
    for tag in ("<reasoning>", "</reasoning>", "<answer>", "</answer>"):
        if text.count(tag) == 1:
            score += 0.25
    if text.count("</answer>") == 1:
        trailing = text.split("</answer>")[-1].strip()
        score -= 0.001 * len(trailing)
    return min(1.0, max(0.0, score))


def xml_count_reward(completions, **kwargs) -> list[float]:
    """0.25 for each of the four tags present exactly once, minus 0.001 per character after </answer>; a dense
    signal that helps a model find the layout.

    >>> xml_count_reward(["<reasoning>x</reasoning><answer>1</answer>", "<answer>1</answer>"])
    [1.0, 0.5]
    """
    return [_xml_count(completion_text(c)) for c in completions]


def single_answer_reward(completions, **kwargs) -> list[float]:
    """1 when there is exactly one <answer> block (repeated blocks are a common reward hack).

    >>> single_answer_reward(["<answer>1</answer>", "<answer>1</answer><answer>2</answer>"])
    [1.0, 0.0]
    """
    return [1.0 if len(ANSWER_BLOCK.findall(completion_text(c))) == 1 else 0.0 for c in completions]


REWARDS = {
    "correctness_reward": correctness_reward,
    "format_reward": format_reward,
    "soft_format_reward": soft_format_reward,
    "numeric_answer_reward": numeric_answer_reward,
    "xml_count_reward": xml_count_reward,
    "single_answer_reward": single_answer_reward,
}


def score(completion: str | list[dict], answer: str, names: list[str] | None = None) -> dict[str, float]:
    """Every (or the named) reward of one completion: for evaluation, chat and the completions log."""
    names = names or list(REWARDS)
    return {n: REWARDS[n]([completion], answer=[answer])[0] for n in names}
