"""The training log's one voice: every line the kit prints while it trains starts with `[kit]`."""

from __future__ import annotations


def say(message: str) -> None:
    print(f"[kit] {message}", flush=True)
