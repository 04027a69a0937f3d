"""`builtin:arithmetic`: synthetic arithmetic questions in GSM8K's answer format, the offline demo's task, with a
sloppy teacher's worked solutions beside the right answers."""

from __future__ import annotations

import hashlib
import random

# `teacher`: the worked solutions of a sloppy teacher, for an SFT warm-up on imperfect demonstrations (the demo's):
# on TEACHER_SLIP of the multiplication questions it adds the two numbers instead ("3 + 4 = 7" for 3 boxes of 4).
# A model that imitates it answers those questions wrongly when greedy but rightly in some samples: headroom that
# only a reward for correct answers (GRPO) can turn into accuracy. `answer` is always right.
TEACHER_SLIP = 0.6
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
    solution = _worked(expr, c)
    teacher = solution
    if kind == "mul" and random.Random(q).random() < TEACHER_SLIP:  # its own generator: questions stay the same
        teacher = _worked(f"{a} + {b}", a + b)
    return {"question": q, "answer": solution, "teacher": teacher}


def _worked(expr: str, value: int) -> str:
    return f"{expr} = <<{expr.replace(' ', '')}={value}>>{value}\n#### {value}"


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
