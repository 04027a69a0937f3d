"""Rewards for the unit-conversion task: plain functions with TRL's signature, each value in [0, 1].

A recipe names them as `my_rewards.py:brevity_reward` (the path is relative to the recipe's folder). TRL calls a
reward with the batch's completions (for chat prompts, each a list of messages: [{"role": "assistant", "content":
...}]) and every data set column as a keyword argument (here `answer`, the gold number as text, and `question`);
it logs the result as rewards/<function name>/mean. Return one finite number per completion.
"""

from kit.data import answers_match, extract_answer  # the kit's one answer extractor: same reading as evaluation


def _text(completion) -> str:
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def brevity_reward(completions, **kwargs) -> list[float]:
    """1 for an answer of at most 120 characters, falling linearly to 0 at 400: conversions need one line.

    >>> brevity_reward(["x" * 100, "x" * 260, "x" * 500])
    [1.0, 0.5, 0.0]
    """
    return [min(1.0, max(0.0, (400 - len(_text(c))) / 280)) for c in completions]


def right_unit_reward(completions, question, **kwargs) -> list[float]:
    """1 when the reasoning names the unit the question asks for (e.g. "cm" or "centimetres"): shows a reward that
    reads a data column (`question`).

    >>> right_unit_reward(["7 m x 100 = 700 cm", "700"], question=["How many centimetres are in 7 metres?"] * 2)
    [1.0, 0.0]
    """
    short = {"centimetres": "cm", "metres": "m", "grams": "g", "minutes": "min", "seconds": "s", "days": "day",
             "inches": "in", "millilitres": "mL", "hours": "h", "months": "month"}
    out = []
    for c, q in zip(completions, question, strict=True):
        unit = q.split("How many ", 1)[-1].split(" ", 1)[0]
        words = _text(c).replace("<answer>", " ").split()
        out.append(1.0 if unit in words or short.get(unit) in words else 0.0)
    return out


def close_enough_reward(completions, answer, **kwargs) -> list[float]:
    """1 when the <answer> number is within 1% of the gold (looser than correctness_reward's exact match).

    >>> close_enough_reward(["<answer>\\n1001\\n</answer>", "<answer>\\n1100\\n</answer>"], answer=["1000", "1000"])
    [1.0, 0.0]
    """
    out = []
    for c, gold in zip(completions, answer, strict=True):
        got = extract_answer(_text(c))
        if got is None:
            out.append(0.0)
            continue
        exact = answers_match(got, gold)
        out.append(1.0 if exact or abs(float(got) - float(gold)) <= 0.01 * abs(float(gold)) else 0.0)
    return out
