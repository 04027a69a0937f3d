"""Questions, prompts and the one answer extractor.

Sources: GSM8K from the Hugging Face Hub (`openai/gsm8k`), a local JSONL with GSM8K's `question`/`answer`
fields, a GSM8K subset shipped with the kit (`builtin:gsm8k-sample`, MIT licence beside it), and a synthetic
arithmetic task in GSM8K's answer format (`builtin:arithmetic`) for the tiny offline demo.

`extract_answer` is the only place that reads a number out of model output: rewards, evaluation and chat all
call it. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from fractions import Fraction
from pathlib import Path

from kit.recipe import KitError, RecipeError

ASSETS = Path(__file__).parent / "assets"
BUILTIN_SOURCES = ("builtin:gsm8k-sample", "builtin:arithmetic")

# A number as GSM8K writes it: optional sign and $, thousands commas, decimals, or a fraction a/b.
NUMBER = re.compile(r"(?:(?<![\w)])-)?\$?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d{1,3}(?!\d))?"
                    r"(?:/\d+(?:\.\d+)?)?(?!\d)(?![eE][+-]?\d)")
PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d*)?(?:[eE][+-]?\d{1,3})?(?:/\d+(?:\.\d+)?)?")  # after parse_number's clean-up
MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})  # − – ﹣ －
ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


# ---------------------------------------------------------------------------------------------------------------
# Answers


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


def solution_to_completion(solution: str) -> str:
    """A GSM8K worked solution rewritten into the <reasoning>/<answer> layout the rewards check (SFT targets).

    >>> print(solution_to_completion("She has 2 + 3 = <<2+3=5>>5.\\n#### 5"))
    <reasoning>
    She has 2 + 3 = 5.
    </reasoning>
    <answer>
    5
    </answer>
    """
    reasoning = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{extract_hash_answer(solution)}\n</answer>"


def solution_to_plain(solution: str) -> str:
    """A GSM8K worked solution as plain prose, without the layout (what an instruct model tends to write).

    >>> solution_to_plain("She has 2 + 3 = <<2+3=5>>5.\\n#### 5")
    'She has 2 + 3 = 5.\\nThe answer is 5.'
    """
    reasoning = re.sub(r"<<[^>]*>>", "", solution.split("####")[0]).strip()
    return f"{reasoning}\nThe answer is {extract_hash_answer(solution)}."


# ---------------------------------------------------------------------------------------------------------------
# Sources


def check_source(source: str, field: str = "data.source") -> None:
    """Fail early (before any model loads) on a source that cannot work."""
    if source.startswith("builtin:"):
        if source not in BUILTIN_SOURCES:
            raise RecipeError(f"{field}: unknown built-in source {source!r}; choose {', '.join(BUILTIN_SOURCES)}")
    elif source.endswith((".jsonl", ".json")) or source.startswith((".", "/", "~")):
        if not Path(source).expanduser().is_file():
            raise RecipeError(f"{field}: file not found: {source}; give a .jsonl with question/answer fields, "
                              f"or use builtin:gsm8k-sample")
    elif "/" not in source:
        raise RecipeError(f"{field}: {source!r} is neither a hub id (owner/name), a .jsonl file, nor one of "
                          f"{', '.join(BUILTIN_SOURCES)}")


def load_rows(source: str, split: str, subset: str = "main") -> list[dict]:
    """Rows with GSM8K's fields, `question` and `answer` (the worked solution ending in "#### N")."""
    check_source(source)
    if source == "builtin:arithmetic":
        return arithmetic_rows(split)
    if source == "builtin:gsm8k-sample":
        return _read_jsonl(ASSETS / "gsm8k" / f"{split}.jsonl")
    path = Path(source).expanduser()
    if path.is_file():
        return _read_jsonl(path)
    import datasets  # heavy, only for hub sources

    try:
        ds = datasets.load_dataset(source, subset, split=split)
    except Exception as e:  # network, auth or name problems: one line that says what to do
        raise KitError(f"data.source: could not load {source} ({subset}, {split}) from the Hugging Face Hub: "
                       f"{str(e).splitlines()[0][:200]}. Offline? Use data.source=builtin:gsm8k-sample or a "
                       f"local .jsonl") from None
    return [{"question": r["question"], "answer": r["answer"]} for r in ds]


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise KitError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise KitError(f"{path}:{n}: not valid JSON; each line must be an object with question and "
                           "answer") from None
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise KitError(f"{path}:{n}: each line needs the fields question and answer (GSM8K's)")
        if not isinstance(row["question"], str) or not isinstance(row["answer"], str):
            raise KitError(f"{path}:{n}: question and answer must be text (answer: a worked solution ending in "
                           "'#### <number>')")
        if "####" not in row["answer"] or parse_number(extract_hash_answer(row["answer"])) is None:
            raise KitError(f"{path}:{n}: the answer must end in '#### <number>' (GSM8K's layout), got "
                           f"{row['answer'][-40:]!r}")
        rows.append(row)
    if not rows:
        raise KitError(f"{path}: no rows")
    return rows


def questions(source: str, split: str, limit: int | None = None, seed: int = 0, subset: str = "main",
              shuffle: bool = True) -> list[dict]:
    """Rows with `question`, `solution` (worked) and `answer` (gold number), shuffled with `seed`, then cut to
    `limit`."""
    rows = [{"question": r["question"], "solution": r["answer"], "answer": extract_hash_answer(r["answer"])}
            for r in load_rows(source, split, subset)]
    if shuffle:
        random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def template_kwargs(spec) -> dict:
    """Extra chat-template arguments a DataSpec asks for (e.g. Qwen3's enable_thinking)."""
    return {} if spec.enable_thinking is None else {"enable_thinking": spec.enable_thinking}


def to_prompt(question: str, system_prompt: str) -> list[dict]:
    """A question in TRL's conversational format."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": question}]


# ---------------------------------------------------------------------------------------------------------------
# Synthetic arithmetic in GSM8K's answer format (the offline demo's task)

_NAMES = ("Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lea")
_ITEMS = ("apples", "pens", "cards", "stamps", "books", "marbles", "shells", "coins")


def _arithmetic_item(rng: random.Random) -> dict:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.choice(("add", "sub", "mul"))
    if kind == "add":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        c, expr = a + b, f"{a} + {b}"
        q = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
    elif kind == "sub":
        a = rng.randint(2, 10)
        b = rng.randint(1, a - 1)
        c, expr = a - b, f"{a} - {b}"
        q = f"{name} has {a} {item}. {name} gives away {b} of them. How many {item} are left?"
    else:
        a, b = rng.randint(2, 4), rng.randint(2, 5)
        c, expr = a * b, f"{a} * {b}"
        q = f"{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have?"
    solution = f"{expr} = <<{expr.replace(' ', '')}={c}>>{c}\n#### {c}"
    return {"question": q, "answer": solution}


def arithmetic_rows(split: str, n: int = 4000) -> list[dict]:
    """Deterministic synthetic questions; a question belongs to `test` when its hash says so (1 in 8), so the
    held-out split never shares a question with `train`."""
    rng = random.Random(1234)
    rows, seen = [], set()
    want_test = split == "test"
    limit = n if not want_test else n // 4
    while len(rows) < limit:
        row = _arithmetic_item(rng)
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        is_test = hashlib.sha1(row["question"].encode()).digest()[0] % 8 == 0
        if is_test == want_test:
            rows.append(row)
    return rows
