"""The names a user's own reward file imports (`from kit.data import extract_answer`), kept where they always were.

The code lives in kit/task/: answers.py (the one answer extractor), data.py (sources, questions, prompts) and
arithmetic.py (the demo's task). This module only hands their public names on.
"""

from kit.task.answers import (  # noqa: F401
                              ANSWER_BLOCK,
                              answers_match,
                              extract_answer,
                              extract_hash_answer,
                              format_number,
                              parse_number,
                              sft_target,
                              solution_to_completion,
                              solution_to_plain,
)
from kit.task.arithmetic import arithmetic_rows  # noqa: F401
from kit.task.data import BUILTIN_SOURCES, load_rows, questions, to_prompt  # noqa: F401
