"""The one answer extractor, and the answer layout the rewards pay for.

`extract_answer` is the only place that reads a number out of model output: rewards, evaluation and chat all call
it. `sft_target` writes a worked solution in the same layout for the SFT warm-up. No torch here.

    >>> extract_answer("<reasoning>3 x 4</reasoning>\n<answer>\n12\n</answer>")
    '12'
"""

from __future__ import annotations

import re
from fractions import Fraction

from kit.errors import KitError

# A number as GSM8K writes it: optional sign and $, thousands commas, decimals, or a fraction a/b.
NUMBER = re.compile(r"(?:(?<![\w)])-)?\$?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d{1,3}(?!\d))?"
                    r"(?:/\d+(?:\.\d+)?)?(?!\d)(?![eE][+-]?\d)")
PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:[eE][+-]?\d{1,3})?(?:/\d+(?:\.\d+)?)?")  # after parse_number's clean-up
MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})  # − – ﹣ －
ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def parse_number(text: str) -> Fraction | None:
    """Exact value of one number as written: "1,000" -> 1000, "$18.00" -> 18, "3/4" -> 3/4; None if not one.

    >>> parse_number("$1,234.50")
    Fraction(2469, 2)
    >>> parse_number("abc") is None
    True
    """
    s = text.strip().rstrip(".").replace(",", "").replace("$", "").replace(" ", "")
    if not PLAIN_NUMBER.fullmatch(s):
        return None
    try:
        if "/" in s:
            num, den = s.split("/")
            value = Fraction(num) / Fraction(den)
        else:
            value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return value


def format_number(value: Fraction) -> str:
    """Canonical text of a number: 18, -3, 0.75, or 1/3 when no short decimal is exact."""
    if value.denominator == 1:
        return str(value.numerator)
    try:
        as_float = float(value)
    except OverflowError:  # hundreds of digits: no float, and no short decimal either
        return f"{value.numerator}/{value.denominator}"
    text = f"{as_float:.6f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == value else f"{value.numerator}/{value.denominator}"


def extract_answer(text: str, lenient: bool = False) -> str | None:
    """The number in the first <answer>...</answer> block, in canonical form, or None.

    None when there is no block, the block is empty, or it holds more than one number (an answer block that lists
    candidates cannot collect the reward). Only the first block counts. With `lenient=True`, fall back to the last
    number anywhere in the text (evaluation's lenient accuracy).

    >>> extract_answer("<reasoning>2+2</reasoning>\\n<answer>\\n $1,000.00 \\n</answer>")
    '1000'
    >>> extract_answer("<answer>3 or 4</answer>") is None
    True
    >>> extract_answer("so the total is 42.", lenient=True)
    '42'
    """
    text = text.translate(MINUS_SIGNS)
    block = ANSWER_BLOCK.search(text)
    if block:
        numbers = NUMBER.findall(block.group(1))
        if len(numbers) == 1:
            value = parse_number(numbers[0])
            if value is not None:
                return format_number(value)
    if lenient:
        for candidate in reversed(NUMBER.findall(text)):
            value = parse_number(candidate)
            if value is not None:
                return format_number(value)
    return None


def extract_hash_answer(solution: str) -> str:
    """The gold number after GSM8K's "#### ", commas stripped as the original release does.

    >>> extract_hash_answer("She has 2 + 3 = <<2+3=5>>5.\\n#### 1,005")
    '1005'
    """
    if "####" not in solution:
        raise KitError(f"a solution has no '#### <answer>' line: {solution[:80]!r}")
    return solution.split("####")[-1].strip().replace(",", "")


def answers_match(predicted: str | None, gold: str) -> bool:
    """Numeric comparison: "18" matches "18.00"; None never matches."""
    if predicted is None:
        return False
    p, g = parse_number(predicted), parse_number(gold)
    return p is not None and g is not None and p == g


def solution_to_completion(solution: str, answer: str | None = None) -> str:
    """A worked solution rewritten into the <reasoning>/<answer> layout the rewards check (SFT targets). The answer
    is the gold after GSM8K's "####" unless given (other answer formats).

    >>> print(solution_to_completion("She has 2 + 3 = <<2+3=5>>5.\\n#### 5"))
    <reasoning>
    She has 2 + 3 = 5.
    </reasoning>
    <answer>
    5
    </answer>
    """
    reasoning = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
    answer = extract_hash_answer(solution) if answer is None else answer
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def solution_to_plain(solution: str, answer: str | None = None) -> str:
    """A GSM8K worked solution as plain prose, without the layout (what an instruct model tends to write).

    >>> solution_to_plain("She has 2 + 3 = <<2+3=5>>5.\\n#### 5")
    'She has 2 + 3 = 5.\\nThe answer is 5.'
    """
    reasoning = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
    return f"{reasoning}\nThe answer is {extract_hash_answer(solution) if answer is None else answer}."


def sft_target(row: dict, layout: bool = True) -> str:
    """The warm-up's target for a `questions()` row: its worked solution and the answer that solution reaches (a
    teacher's, which may differ from the gold), in the <reasoning>/<answer> layout or as plain prose."""
    to_text = solution_to_completion if layout else solution_to_plain
    return to_text(row["solution"], row["solution_answer"])
