"""Reward functions with TRL's signature: `f(completions, **kwargs) -> list[float]`, each value in [0, 1].

Completions may be plain strings or conversational (a list of messages, as GRPOTrainer passes them for chat
prompts). Magnitudes come from the recipe's weights (TRL `reward_weights`), never from constants in here; weight 0
logs a reward without training on it. Malformed output is normal input and scores 0; a crash in here is a bug and
stops the run.

TRL logs each as `rewards/<function name>/mean`, which is the name the recipe uses.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import math
import numbers
import re
import sys
import traceback
import types
from pathlib import Path

from kit.errors import KitError, RecipeError
from kit.task.answers import ANSWER_BLOCK, answers_match, extract_answer
from kit.task.data import to_prompt

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
    """Every (or the named) reward of one completion, keyed by function name: for evaluation, chat and the
    completions log. `names` are recipe reward names (built-in names or `file.py:function` specs)."""
    names = names or list(REWARDS)
    return {function_name(n): load_reward(n)([completion], answer=[answer])[0] for n in names}


# ---------------------------------------------------------------------------------------------------------------
# Rewards from the user: `path/to/file.py:function` (resolved against the recipe's folder) or
# `package.module:function`. Loading a reward file runs its code, as `python file.py` would.


class RewardError(KitError):
    """A reward that crashed or returned something that is not one finite number per completion. Carries what the
    run's summary.json records: the reward's name, the completion that broke it and the error."""

    def __init__(self, message: str, reward: str, completion: str | None = None, error: str = "",
                 trace: str = ""):
        super().__init__(message)
        self.reward, self.completion, self.error, self.trace = reward, completion, error, trace


def is_user_reward(name: str) -> bool:
    """A reward the user brings (`file.py:function` or `module:function`), not one of REWARDS."""
    return ":" in name and name not in REWARDS


def function_name(name: str) -> str:
    """The function a recipe reward name points at: TRL logs it as `rewards/<this>/mean`.

    >>> function_name("my_rewards.py:brevity_reward"), function_name("format_reward")
    ('brevity_reward', 'format_reward')
    """
    return name.rsplit(":", 1)[1] if is_user_reward(name) else name


def _split(name: str, field: str) -> tuple[str, str]:
    target, _, func = name.rpartition(":")
    if not target or not func.isidentifier():
        raise RecipeError(f"{field}: {name!r} is not `file.py:function` or `module:function` (e.g. "
                          "my_rewards.py:brevity_reward)")
    return target, func


def resolve_name(name: str, base_dir: str | Path | None, field: str = "rewards[0].name") -> str:
    """A recipe's reward name with a reward file's path made absolute (relative paths start at the recipe's folder,
    then the current directory), so a saved recipe still finds it. Unknown built-in names are an error here."""
    if not is_user_reward(name):
        if name not in REWARDS:
            close = difflib.get_close_matches(name, REWARDS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(REWARDS)}"
            raise RecipeError(f"{field}: unknown reward {name!r}; {hint} (or your own: my_rewards.py:my_reward)")
        return name
    target, func = _split(name, field)
    if not target.endswith(".py"):
        return name  # an importable module: nothing to resolve
    path = Path(target).expanduser()
    tried = [path] if path.is_absolute() else [Path(base_dir or ".") / path, Path.cwd() / path]
    for candidate in tried:
        if candidate.is_file():
            return f"{candidate.resolve()}:{func}"
    raise RecipeError(f"{field}: reward file not found: {target} (looked in "
                      f"{', '.join(sorted({str(c.parent.resolve()) for c in tried}))})")


_LOADED: dict[tuple, types.ModuleType] = {}


def _import_file(path: Path, field: str) -> types.ModuleType:
    key = (str(path), path.stat().st_mtime_ns)
    if key in _LOADED:
        return _LOADED[key]
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"kit_reward_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent))  # as for a script: helpers beside the file import
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        where = next((f"{path.name}:{fr.lineno}" for fr in reversed(traceback.extract_tb(e.__traceback__))
                      if fr.filename == str(path)), path.name)
        if isinstance(e, SyntaxError):
            where = f"{path.name}:{e.lineno}"
        raise RecipeError(f"{field}: importing {path} failed at {where}: {type(e).__name__}: "
                          f"{_first_line(e)}") from None
    finally:
        sys.path.remove(str(path.parent))
    _LOADED[key] = module
    return module


def load_reward(name: str, field: str = "rewards[0].name"):
    """The function a recipe reward name points at: a built-in, a function in a reward file, or one in an
    importable module. A missing file, module or function is a RecipeError naming it."""
    if not is_user_reward(name):
        if name not in REWARDS:
            resolve_name(name, None, field)  # raises with a did-you-mean
        return REWARDS[name]
    target, func = _split(name, field)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise RecipeError(f"{field}: reward file not found: {path}")
        module = _import_file(path, field)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise RecipeError(f"{field}: cannot import module {target!r} ({_first_line(e)}); install it or put "
                              "it on PYTHONPATH, or give a file: path/to/file.py:function") from None
    fn = getattr(module, func, None)
    if fn is None:
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        raise RecipeError(f"{field}: {target} has no function {func!r}"
                          + (f"; it defines {', '.join(found)}" if found else ""))
    if not callable(fn) or isinstance(fn, type):
        raise RecipeError(f"{field}: {target}:{func} is a {type(fn).__name__}, not a function "
                          "f(completions, **kwargs) -> list[float]")
    return fn


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _text(completion) -> str:
    return completion_text(completion) if isinstance(completion, (str, list)) else repr(completion)


def _check_values(values, completions, label: str, trace: str = "") -> list[float]:
    """One finite number per completion, or a RewardError naming the completion whose value is wrong."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise RewardError(f"reward {label} returned {type(values).__name__}, not a list of numbers (one per "
                          "completion)", label, None, "wrong type")
    if len(values) != len(completions):
        raise RewardError(f"reward {label} returned {len(values)} values for {len(completions)} completions; "
                          "return one number per completion", label, None, "wrong length")
    out = []
    for value, completion in zip(values, completions):
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a 0-d numpy array or torch tensor
            value = value.item()
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise RewardError(f"reward {label} returned {value!r} (not a finite number) for the completion "
                              f"{_text(completion)[:120]!r}", label, _text(completion), f"value {value!r}")
        out.append(float(value))
    return out


def guarded(fn, label: str):
    """`fn` with the same name (TRL logs `rewards/<__name__>/mean`) that turns a crash or a bad return value into a
    RewardError naming the reward and the completion that broke it: the run fails with both in summary.json."""

    @functools.wraps(fn)
    def reward(completions, **kwargs):
        try:
            values = fn(completions, **kwargs)
        except Exception as e:
            trace = traceback.format_exc()
            culprit = _culprit(fn, completions, kwargs)
            shown = f" on the completion {_text(culprit)[:120]!r}" if culprit is not None else ""
            raise RewardError(f"reward {label} raised {type(e).__name__}: {_first_line(e)}{shown}", label,
                              None if culprit is None else _text(culprit), f"{type(e).__name__}: {_first_line(e)}",
                              trace) from None
        return _check_values(values, completions, label)

    return reward


def _culprit(fn, completions, kwargs):
    """The first completion that makes `fn` raise on its own (a batch of one), or None. Runs only after a crash,
    when the run is failing anyway."""
    n = len(completions)
    for i in range(n):
        one = {k: [v[i]] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}
        try:
            fn([completions[i]], **one)
        except Exception:
            return completions[i]
    return None


def reward_functions(recipe) -> list:
    """The recipe's rewards as TRL gets them, in recipe order, each guarded."""
    return [guarded(load_reward(r.name, f"rewards[{i}].name"), r.name) for i, r in enumerate(recipe.rewards)]


def sample_batch(row: dict, system_prompt: str) -> dict:
    """What GRPOTrainer passes a reward, for three completions of one of the task's questions: the correct answer
    in the layout, an empty answer, and plain prose. Chat prompts, so completions are message lists."""

    texts = [f"<reasoning>\nworking\n</reasoning>\n<answer>\n{row['answer']}\n</answer>", "",
             f"I think the answer is {row['answer']}."]
    n = len(texts)
    return dict(prompts=[to_prompt(row["question"], system_prompt)] * n,
                completions=[[{"role": "assistant", "content": t}] for t in texts],
                # stand-in token ids (no tokenizer before the model loads): one per word
                completion_ids=[list(range(len(t.split()))) for t in texts],
                answer=[row["answer"]] * n, question=[row["question"]] * n,
                trainer_state=types.SimpleNamespace(global_step=0, max_steps=1, epoch=0.0),
                log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None)


def check_rewards(recipe, row: dict) -> None:
    """Call every reward of the recipe once on sample completions of `row` (one of the task's own rows) before any
    model loads: a crash, a list of the wrong length or a value that is not a finite number is a RewardError."""
    batch = sample_batch(row, recipe.data.system_prompt)
    for fn in reward_functions(recipe):
        fn(**batch)


WRITING_ONE = """Your own reward: a plain function in a .py file, named in the recipe as `file.py:function` (relative to
the recipe's folder) or `package.module:function`:

    def brevity_reward(completions, **kwargs) -> list[float]:
        # completions: for chat prompts each is [{"role": "assistant", "content": "..."}]; data columns
        # (answer: the gold number as text, question) arrive as keyword arguments
        return [1.0 if len(c[0]["content"]) < 200 else 0.0 for c in completions]

    rewards:
      - {name: my_rewards.py:brevity_reward, weight: 0.2}

One finite number per completion, by convention in [0, 1] (the recipe's weight sets its size; weight 0 logs it
without training on it). Logged as rewards/<function>/mean. Before any model loads the kit calls it once on sample
completions; a crash mid-run fails the run with the reward and the completion in summary.json. A recipe with a
reward file runs that file's code, as `python file.py` would: run recipes you trust."""
