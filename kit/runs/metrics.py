"""Append-only JSONL: the metrics and completions files of a run folder.

One JSON object per line, flushed at once, so a reader (the app, `kit show`) can follow a run that is still
writing. The reader tolerates a half-written last line. 0.0 is a value, never "missing" (GRPO's loss is often
exactly 0). No torch here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; None says "no value this step"
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return _clean(value.item())
    return value


class JsonlWriter:
    """Appends one object per line to each of `paths` and flushes it to disk at once."""

    def __init__(self, *paths: str | Path):
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            p.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        line = (json.dumps(_clean(record), ensure_ascii=False) + "\n").encode("utf-8")
        for p in self.paths:
            with open(p, "ab", buffering=0) as f:
                size = f.seek(0, os.SEEK_END)
                try:
                    rest = memoryview(line)
                    while rest:  # an unbuffered write may write part of the line
                        rest = rest[f.write(rest):]
                    os.fsync(f.fileno())
                except OSError:  # a full disk: cut the half line off again, so the file stays whole
                    f.truncate(size)
                    raise


def rewrite_jsonl(path: str | Path, records: list[dict]) -> None:
    """Replace a JSONL file with `records`, atomically: killed or out of disk space halfway, the old file stays."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(_clean(r), ensure_ascii=False) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def torn(path: str | Path) -> bool:
    """Does the file end in a half-written line (its writer was killed mid-write)? Reads only the last byte."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def read_jsonl(path: str | Path) -> list[dict]:
    """Every complete record of a JSONL file; a half-written last line (a run still writing, or killed
    mid-write) is skipped. A missing file is an empty list."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # half-written (or blank) line
            if isinstance(record, dict):
                records.append(record)
    return records


def series(records: Iterable[dict], key: str) -> list[tuple[float, float]]:
    """(run_step, value) pairs for `key`, skipping records without it (zeros kept)."""
    out = []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((r.get("run_step", r.get("step", 0)), float(v)))
    return out


def window_mean(records: list[dict], key: str, first: bool, fraction: float = 0.2, min_n: int = 3) -> float | None:
    """Mean of `key` over the first (or last) `fraction` of its logged values: a before/after figure that one
    noisy step can't swing."""
    values = [v for _, v in series(records, key)]
    if not values:
        return None
    n = max(min_n, int(len(values) * fraction))
    chunk = values[:n] if first else values[-n:]
    return sum(chunk) / len(chunk)


def reward_keys(records: Iterable[dict]) -> list[str]:
    """`reward` and every `rewards/<name>/mean` seen, in first-seen order."""
    keys = []
    for r in records:
        for k in r:
            if (k == "reward" or (k.startswith("rewards/") and k.endswith("/mean"))) and k not in keys:
                keys.append(k)
    return keys
