"""Questions and prompts: where a task's rows come from.

Sources: a Hugging Face Hub data set (`openai/gsm8k`), a local .jsonl / .json / .csv / .parquet file, a GSM8K
subset shipped with the kit (`builtin:gsm8k-sample`, MIT licence beside it), and a synthetic arithmetic task in
GSM8K's answer format (`builtin:arithmetic`, kit/task/arithmetic.py) for the tiny offline demo. A recipe's DataSpec
maps the source's fields onto question / gold answer (`question_field`, `answer_field`, `answer_format`: gsm8k,
number, boxed) and, for the SFT warm-up, worked solution (`solution_field`). No torch here.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from kit.errors import KitError, RecipeError
from kit.task.answers import (
    MINUS_SIGNS,
    extract_hash_answer,
    format_number,
    parse_number,
)
from kit.task.arithmetic import arithmetic_rows

GSM8K_SAMPLE = Path(__file__).parent / "gsm8k"
BUILTIN_SOURCES = ("builtin:gsm8k-sample", "builtin:arithmetic")


# ---------------------------------------------------------------------------------------------------------------
# Sources: where rows come from, and how a row's fields map onto question / gold answer


FILE_TYPES = (".jsonl", ".json", ".csv", ".parquet")
ANSWER_FORMATS = {"gsm8k": "'#### <number>' (GSM8K's layout: a worked solution ending in '#### <number>')",
                  "number": "a number (the field holds just the answer)",
                  "boxed": "a number in the last \\boxed{...}"}


def is_file_source(source: str) -> bool:
    return source.endswith(FILE_TYPES) or source.startswith((".", "/", "~"))


def _split_path(source: str, split: str) -> Path:
    """A local source for one split: `{split}` in the name is replaced (problems-{split}.jsonl), else the one file
    serves every split."""
    return Path(source.replace("{split}", split)).expanduser()


def resolve_source(source: str, base_dir: str | Path | None, field: str = "data.source") -> str:
    """A local source as an absolute path (a relative one starts at the recipe's folder, then the current
    directory), so the run folder's saved recipe still finds it; other sources unchanged."""
    if source.startswith("builtin:") or not is_file_source(source):
        return source
    path = Path(source).expanduser()
    if path.is_absolute():
        return str(path)
    for folder in ([Path(base_dir)] if base_dir else []) + [Path.cwd()]:
        candidate = folder / path
        if any(_split_path(str(candidate), s).is_file() for s in ("train", "test")):
            return str(candidate.resolve())
    return source  # check_source says it is missing


def check_source(source: str, field: str = "data.source") -> None:
    """Fail early (before any model loads) on a source that cannot work."""
    if source.startswith("builtin:"):
        if source not in BUILTIN_SOURCES:
            raise RecipeError(f"{field}: unknown built-in source {source!r}; choose {', '.join(BUILTIN_SOURCES)}")
    elif is_file_source(source):
        if not source.endswith(FILE_TYPES):
            raise RecipeError(f"{field}: {source}: unknown file type; use one of {', '.join(FILE_TYPES)}")
        if not any(_split_path(source, s).is_file() for s in ("train", "test")):
            raise RecipeError(f"{field}: file not found: {source}; give a {'/'.join(FILE_TYPES)} file (a relative "
                              "path starts at the recipe's folder), or use builtin:gsm8k-sample")
    elif "/" not in source:
        raise RecipeError(f"{field}: {source!r} is neither a hub id (owner/name), a local file "
                          f"({', '.join(FILE_TYPES)}), nor one of {', '.join(BUILTIN_SOURCES)}")


def load_rows(source: str, split: str, subset: str | None = "main") -> list[dict]:
    """The raw rows of a source's split, fields as stored (GSM8K's: `question` and `answer`, the worked solution
    ending in "#### N")."""
    return [row for _, row in _located_rows(source, split, subset)]


def _located_rows(source: str, split: str, subset: str | None) -> list[tuple[str, dict]]:
    """(where, row) pairs: `where` is what an error message points at (path:line, or the hub row)."""
    check_source(source)
    if source == "builtin:arithmetic":
        return [(f"{source} ({split}) row {i}", r) for i, r in enumerate(arithmetic_rows(split), 1)]
    if source == "builtin:gsm8k-sample":
        return _read_jsonl(GSM8K_SAMPLE / f"{split}.jsonl")
    if is_file_source(source):
        path = _split_path(source, split)
        if not path.is_file():
            raise KitError(f"data.source: no {split} file {path} (the {{split}} in {source} names one file per "
                           "split)")
        reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
        rows = reader[path.suffix](path)
        if not rows:
            raise KitError(f"{path}: no rows (the file is empty)")
        return rows
    import datasets  # heavy, only for hub sources

    try:
        ds = datasets.load_dataset(source, subset, split=split)
    except Exception as e:  # network, auth or name problems: one line that says what to do
        raise KitError(f"data.source: could not load {source} ({subset}, {split}) from the Hugging Face Hub: "
                       f"{str(e).splitlines()[0][:200]}. Offline? Use data.source=builtin:gsm8k-sample or a "
                       f"local file (data.subset=null for a data set without configs)") from None
    return [(f"{source} ({split}) row {i}", dict(r)) for i, r in enumerate(ds, 1)]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise KitError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise KitError(f"{path}:{n}: not valid JSON; each line must be one object with the question and "
                           "answer fields") from None
        if not isinstance(row, dict):
            raise KitError(f"{path}:{n}: not a JSON object; each line must be one object with the question and "
                           "answer fields (data.question_field, data.answer_field)")
        rows.append((f"{path}:{n}", row))
    return rows


def _read_json(path: Path) -> list[tuple[str, dict]]:
    try:
        items = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise KitError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); a .json source is one array of objects (one "
                       "object per line: name it .jsonl)") from None
    if not isinstance(items, list) or not all(isinstance(r, dict) for r in items):
        raise KitError(f"{path}: a .json source must be an array of objects, one per question")
    return [(f"{path}[{i}]", r) for i, r in enumerate(items)]


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    rows = []
    for row in reader:
        if None in row:
            raise KitError(f"{path}:{reader.line_num}: more values than the header has columns")
        rows.append((f"{path}:{reader.line_num}", row))
    return rows


def _read_parquet(path: Path) -> list[tuple[str, dict]]:
    import pyarrow.parquet  # installed with datasets

    try:
        table = pyarrow.parquet.read_table(path)
    except Exception as e:
        raise KitError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None
    return [(f"{path} row {i}", r) for i, r in enumerate(table.to_pylist(), 1)]


def gold_answer(value, answer_format: str = "gsm8k") -> str | None:
    """The gold number of a data field, or None when it does not parse.

    gsm8k: the number after "####" (commas stripped, as GSM8K's release does); number: the field is the answer;
    boxed: the last \\boxed{...} (\\frac{a}{b} reads as a/b).

    >>> gold_answer("2 + 3 = 5\\n#### 5"), gold_answer(2.50, "number"), gold_answer("so $\\\\boxed{\\\\frac{3}{4}}$", "boxed")
    ('5', '2.5', '0.75')
    """
    if answer_format == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        parsed = parse_number(str(value).translate(MINUS_SIGNS))
        return format_number(parsed) if parsed is not None else None
    if not isinstance(value, str):
        return None
    if answer_format == "gsm8k":
        if "####" not in value:
            return None
        gold = extract_hash_answer(value)
        return gold if parse_number(gold) is not None else None
    inner = _last_boxed(value)
    if inner is None:
        return None
    inner = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", inner).replace("{,}", ",")
    parsed = parse_number(inner.replace("\\!", "").replace("\\$", "").translate(MINUS_SIGNS))
    return format_number(parsed) if parsed is not None else None


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def questions(source, split: str, limit: int | None = None, seed: int = 0, subset: str | None = "main",
              shuffle: bool = True) -> list[dict]:
    """Rows with `question`, `solution` (worked, or None), `answer` (gold number) and `solution_answer` (the number
    the worked solution reaches: the gold, unless data.solution_field's text ends elsewhere), shuffled with
    `seed`, then cut to `limit`. `source` is a recipe's DataSpec (its field mapping and answer format apply; `subset` is ignored)
    or a source name with GSM8K's fields."""
    if isinstance(source, str):
        src, qf, af, fmt, sf = source, "question", "answer", "gsm8k", None
    else:
        spec = source
        src, subset, qf, af = spec.source, spec.subset, spec.question_field, spec.answer_field
        fmt, sf = spec.answer_format, spec.solution_field
    located = _located_rows(src, split, subset)
    rows, bad = [], []
    for where, row in located:
        for name, fld in ((qf, "question_field"), (af, "answer_field"), (sf, "solution_field")):
            if name is not None and name not in row:
                raise KitError(f"data.{fld}: {where} has no field {name!r}; its fields: "
                               f"{', '.join(map(str, row)) or '(none)'}")
        if not isinstance(row[qf], str) or not row[qf].strip():
            raise KitError(f"{where}: the question ({qf}) must be non-empty text, got {_show(row[qf])}")
        if fmt == "gsm8k" and not isinstance(row[af], str):
            raise KitError(f"{where}: the answer ({af}) must be text for data.answer_format=gsm8k (a worked "
                           f"solution ending in '#### <number>'), got {_show(row[af])}; a field holding just "
                           "the number is data.answer_format=number")
        gold = gold_answer(row[af], fmt)
        if gold is None:
            bad.append((where, row[af]))
            continue
        if sf is not None:  # a separate worked solution (a teacher's): its own final answer, if it states one
            solution = str(row[sf])
            reached = gold_answer(solution, fmt) if fmt != "number" else None
        else:
            solution = row[af] if fmt in ("gsm8k", "boxed") else None
            reached = None
        rows.append({"question": row[qf], "solution": solution, "answer": gold, "solution_answer": reached or gold})
    if bad:
        raise KitError(f"data.answer_field: {len(bad)} of {len(located)} gold answers ({af}) do not parse as "
                       f"{ANSWER_FORMATS[fmt]} (data.answer_format={fmt}); first: {bad[0][0]}: {_show(bad[0][1])}")
    if shuffle:
        random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def template_kwargs(spec) -> dict:
    """Extra chat-template arguments a DataSpec asks for (e.g. Qwen3's enable_thinking)."""
    return {} if spec.enable_thinking is None else {"enable_thinking": spec.enable_thinking}


def to_prompt(question: str, system_prompt: str) -> list[dict]:
    """A question in TRL's conversational format."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": question}]

