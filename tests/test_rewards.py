"""Rewards and the answer extractor, on real GSM8K rows and on the pitfalls that let a reward be gamed."""

import json
import re

import pytest

from kit.task import answers, data
from kit.task.rewards import (
    REWARDS,
    correctness_reward,
    format_reward,
    numeric_answer_reward,
    score,
    soft_format_reward,
    xml_count_reward,
)

SAMPLE = data.GSM8K_SAMPLE
ROWS = [json.loads(line) for line in (SAMPLE / "test.jsonl").read_text().splitlines()]


def conv(text):
    """A completion as GRPOTrainer passes it for chat prompts."""
    return [{"role": "assistant", "content": text}]


def layout(answer, reasoning="some steps"):
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def test_gold_answers_from_real_rows():
    assert answers.extract_hash_answer(ROWS[0]["answer"]) == "18"  # Janet's ducks
    with_comma = next(r for r in ROWS if "#### 2,125" in r["answer"])
    assert answers.extract_hash_answer(with_comma["answer"]) == "2125"


@pytest.mark.parametrize("row", ROWS[:40], ids=lambda r: r["question"][:30])
def test_gold_solution_in_layout_earns_every_reward(row):
    gold = answers.extract_hash_answer(row["answer"])
    completion = answers.solution_to_completion(row["answer"])
    for c in (completion, conv(completion)):
        assert score(c, gold) == {name: 1.0 for name in REWARDS}


@pytest.mark.parametrize("written, gold", [
    ("1,000", "1000"), ("$18.00", "18"), ("18.", "18"), ("-3", "-3"), ("3/4", "0.75"), ("0.75", "3/4"),
    ("  \n 18 \n\n", "18"), ("18 dollars", "18"), ("$1,234,567", "1234567"), ("50%", "50"),
    ("\u221210", "-10"), ("1e3", "1000"), ("1.5e2", "150"), ("4e-2", "0.04"),
])
def test_correctness_compares_numbers_not_strings(written, gold):
    assert correctness_reward([layout(written)], answer=[gold]) == [1.0]
    assert correctness_reward([conv(layout(written))], answer=[gold]) == [1.0]


def test_correctness_on_a_real_row_with_commas():
    row = next(r for r in ROWS if "#### 2,125" in r["answer"])
    gold = answers.extract_hash_answer(row["answer"])
    assert correctness_reward([layout("2,125"), layout("2125.0"), layout("2,124")], answer=[gold] * 3) == \
        [1.0, 1.0, 0.0]


@pytest.mark.parametrize("completion", [
    "<reasoning>\nx\n</reasoning>\n<answer>\n\n</answer>",          # empty answer
    "The answer is 18.",                                              # no answer block
    "<reasoning>\n18\n</reasoning>",                                  # number only in the reasoning
    "<answer>\n5\n</answer>\n<answer>\n18\n</answer>",                # several blocks: only the first counts
    "<answer>\n17 18 19\n</answer>",                                  # a list of candidates
    "<answer>\n16 or 18\n</answer>",
    "<answer>\n18",                                                   # truncated, no closing tag
    "<answer>\neighteen\n</answer>",
    "<answer>\n18e9999\n</answer>",                                 # an exponent too big to mean 18
])
def test_correctness_cannot_be_gamed(completion):
    assert correctness_reward([completion], answer=["18"]) == [0.0]


def test_first_block_counts_even_when_right_later():
    assert correctness_reward(["<answer>18</answer><answer>5</answer>"], answer=["18"]) == [1.0]


def test_format_rewards():
    good = layout("18")
    assert format_reward([good, conv(good)]) == [1.0, 1.0]
    assert format_reward([good + "\ntrailing chatter"]) == [0.0]
    assert format_reward(["<reasoning>x</reasoning><answer>18</answer>"]) == [0.0]  # no newlines: strict fails
    assert soft_format_reward(["<reasoning>x</reasoning> <answer>18</answer>"]) == [1.0]
    doubled = good + "\n<answer>\n19\n</answer>"
    assert format_reward([doubled]) == [0.0]


def test_numeric_answer_reward_accepts_negatives_decimals_fractions():
    assert numeric_answer_reward([layout(a) for a in ("-3", "2.5", "3/4", "1,000", "x", "")]) == \
        [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_xml_count_is_dense_and_bounded():
    values = xml_count_reward([layout("1"), "<reasoning>\nx", "", layout("1") + "x" * 2000])
    assert values[0] == 1.0 and values[1] == 0.25 and values[2] == 0.0 and values[3] == 0.0
    assert all(0.0 <= v <= 1.0 for v in values)


def test_every_reward_is_in_unit_interval_and_named_after_itself():
    odd = ["", "<answer>", "</answer></answer>", layout("1" * 500), "\x00", conv("")]
    for name, fn in REWARDS.items():
        assert fn.__name__ == name and name.endswith("_reward")
        values = fn(odd, answer=["1"] * len(odd))
        assert len(values) == len(odd) and all(0.0 <= v <= 1.0 for v in values)


def test_lenient_extraction_is_last_number():
    assert answers.extract_answer("so 3 + 4 = 7 apples", lenient=True) == "7"
    assert answers.extract_answer("so 3 + 4 = 7 apples") is None
    assert answers.extract_answer("no digits", lenient=True) is None


def test_extract_hash_answer_requires_the_marker():
    from kit.errors import KitError

    with pytest.raises(KitError):
        answers.extract_hash_answer("no marker here")


def test_a_unicode_minus_keeps_its_sign():
    assert correctness_reward([layout("\u221218")], answer=["18"]) == [0.0]
    assert correctness_reward([layout("\u221218")], answer=["-18"]) == [1.0]


@pytest.mark.parametrize("huge", ["9" * 400 + ".5", "9" * 400 + "/2", "9" * 5000])
def test_absurdly_long_numbers_score_without_crashing(huge):
    for reward in REWARDS.values():
        assert 0.0 <= reward([layout(huge)], answer=["18"])[0] <= 1.0
    assert correctness_reward([layout(huge)], answer=["18"]) == [0.0]
    answers.extract_answer("total " + huge, lenient=True)  # no OverflowError


@pytest.mark.parametrize("line, needle", [
    ('{"question": "q", "answer": 18}', "must be text"),
    ('{"question": "q", "answer": "no marker"}', "#### <number>"),
    ('{"question": "q", "answer": "x\\n#### eighteen"}', "#### <number>"),
    ('["q", "a"]', "question and answer"),
    ("{not json", "not valid JSON"),
])
def test_local_jsonl_rows_are_checked_with_their_line(tmp_path, line, needle):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "ok?", "answer": "1 + 1 = 2\\n#### 2"}\n' + line + "\n")
    with pytest.raises(data.KitError, match=needle) as e:
        data.questions(str(path), "train")
    assert f"{path}:2" in str(e.value)


def test_local_jsonl_must_be_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "caf\xe9", "answer": "#### 2"}\n')
    with pytest.raises(data.KitError, match="not UTF-8"):
        data.questions(str(path), "train")


# ---------------------------------------------------------------------------------------------------------------
# Rewards from the user


def _reward_file(tmp_path, code):
    path = tmp_path / "user_rewards.py"
    path.write_text(code)
    return path


def test_user_reward_loads_by_file_and_scores_like_a_builtin(tmp_path):
    from kit.task import rewards

    path = _reward_file(tmp_path, "def short_reward(completions, **kw):\n"
                                  "    return [1.0 if len(c[0]['content'] if isinstance(c, list) else c) < 10 else 0.0"
                                  " for c in completions]\n")
    name = rewards.resolve_name("user_rewards.py:short_reward", tmp_path)
    assert name == f"{path.resolve()}:short_reward" and rewards.function_name(name) == "short_reward"
    assert rewards.load_reward(name)(["short", conv("a much longer answer")]) == [1.0, 0.0]
    assert score("tiny", "1", [name, "format_reward"]) == {"short_reward": 1.0, "format_reward": 0.0}


def test_user_reward_from_an_importable_module():
    from kit.task import rewards

    fn = rewards.load_reward("kit.task.rewards:format_reward")  # any module:function on the import path
    assert fn is format_reward and rewards.resolve_name("kit.task.rewards:format_reward", None) == "kit.task.rewards:format_reward"


def test_guarded_reward_names_the_completion_that_broke_it():
    from kit.task import rewards

    def picky_reward(completions, answer, **kw):
        return [1.0 / (0 if "boom" in completion_text(c) else 1) for c in completions]

    from kit.task.rewards import completion_text

    guarded = rewards.guarded(picky_reward, "picky.py:picky_reward")
    assert guarded.__name__ == "picky_reward"  # TRL's metric name stays the function's
    assert guarded([conv("fine"), conv("fine too")], answer=["1", "2"]) == [1.0, 1.0]
    with pytest.raises(rewards.RewardError) as e:
        guarded([conv("fine"), conv("this one goes boom"), conv("ok")], answer=["1", "2", "3"])
    assert e.value.completion == "this one goes boom" and e.value.reward == "picky.py:picky_reward"
    assert "ZeroDivisionError" in str(e.value) and "boom" in str(e.value) and "Traceback" in e.value.trace


@pytest.mark.parametrize("returned, needle", [
    ("[1.0]", "1 values for 2 completions"), ("[0.5, float('inf')]", "inf"), ("[True, 0.0]", "True"),
    ("(0.0, 'x')", "'x'"), ("0.5", "returned float"),
])
def test_guarded_reward_rejects_bad_values(tmp_path, returned, needle):
    from kit.task import rewards

    namespace = {}
    exec(f"def bad_reward(completions, **kw):\n    return {returned}\n", namespace)
    with pytest.raises(rewards.RewardError, match=re.escape(needle)):
        rewards.guarded(namespace["bad_reward"], "bad_reward")(["a", "b"])


def test_numpy_and_int_values_are_numbers():
    import numpy as np

    from kit.task import rewards

    assert rewards.guarded(lambda completions, **kw: [np.float32(0.5), 1], "np")(["a", "b"]) == [0.5, 1.0]


@pytest.mark.parametrize("value, fmt, gold", [
    ("x\n#### 1,005", "gsm8k", "1005"), ("#### five", "gsm8k", None), (18, "number", "18"), ("18.50", "number", "18.5"),
    ("\u22123", "number", "-3"), (True, "number", None), ("three", "number", None),
    ("so \\boxed{42}.", "boxed", "42"), ("\\boxed{\\dfrac{3}{4}}", "boxed", "0.75"), ("\\boxed{x+1}", "boxed", None),
    ("first \\boxed{1} then \\boxed{2}", "boxed", "2"), ("no box", "boxed", None), ("\\boxed{1", "boxed", None),
])
def test_gold_answers_by_format(value, fmt, gold):
    assert data.gold_answer(value, fmt) == gold
