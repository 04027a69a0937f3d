"""A run in words: the pieces `kit show`, `kit runs` and the app's Runs tab print, written once. No torch here."""

from __future__ import annotations

from pathlib import Path

from kit import runs
from kit.runs import metrics

FACTS = ("recipe", "model", "backend", "device", "started", "elapsed_s")  # summary.json keys shown as they are


def num(value) -> str:
    """A metric for display; 0.0 shows as 0.000, never as missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def label(key: str) -> str:
    """rewards/format_reward/mean -> format_reward; other keys as they are."""
    return key.removeprefix("rewards/").removesuffix("/mean")


def facts(summary: dict) -> list[tuple[str, object]]:
    return [(key, summary[key]) for key in FACTS if summary.get(key) is not None]


def stage_lines(summary: dict) -> list[str]:
    return [f"{s['name']}: {s['status']}, {s['steps']}/{s['max_steps']} steps" for s in summary.get("stages", [])]


def steps(summary: dict) -> str:
    """Steps done of the whole run, e.g. 40/700."""
    return f"{summary.get('run_step', 0)}/{summary.get('max_steps', '?')}"


def gains(summary: dict) -> str | None:
    """Each reward and evaluation figure, first -> last 20% of logged steps (evaluations: first -> last)."""
    first, final = summary.get("first") or {}, summary.get("final") or {}
    pairs = [f"{label(k)} {num(first[k])} -> {num(final[k])}" for k in first
             if first.get(k) is not None and final.get(k) is not None]
    return ", ".join(pairs) if first and final else None


def last_reward(run: Path) -> float | None:
    points = metrics.series(metrics.read_jsonl(Path(run) / runs.METRICS), "reward")
    return points[-1][1] if points else None
