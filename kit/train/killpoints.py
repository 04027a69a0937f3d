"""Test-only: SIGKILL this process at a named moment, so a test can kill a run exactly where it matters.

    KIT_TEST_KILL_AT=step:2-grpo/4       after the 4th optimizer step of stage 2-grpo (before it is logged or saved)
    KIT_TEST_KILL_AT=eval:2-grpo/3       during evaluation during training at step 3 (answers scored, not logged)
    KIT_TEST_KILL_AT=sampling:3-rejection_sft   during rejection sampling (after its first batch of questions)
    KIT_TEST_KILL_AT=write:stages/2-grpo/checkpoints/checkpoint-6/trainer_state.json
                                         when that file (a path in the run folder) is opened for writing: here
                                         a checkpoint torn as a kill or a full disk leaves it (transformers
                                         writes trainer_state.json last); adapter/adapter_config.json: while the
                                         final adapter is written (its weights are, its config is not)

Unset (always, outside tests) nothing happens. tests/test_kill.py and benchmarks/kill_resume.py use it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ENV = "KIT_TEST_KILL_AT"


def _kill(wanted: str) -> None:
    print(f"\n[kit] {ENV}={wanted}: SIGKILL", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def reached(event: str, key: str) -> None:
    """The run is at `event:key`; die here if the test asked for it."""
    wanted = os.environ.get(ENV)
    if wanted and wanted == f"{event}:{key}":
        _kill(wanted)


def install(run: Path) -> None:
    """For write:<path>: an audit hook (sys.addaudithook, no library patched) that sees every file opened for
    writing and kills when it is RUN/<path>; writes inside transformers and peft have no other hook."""
    wanted = os.environ.get(ENV, "")
    if not wanted.startswith("write:"):
        return
    target = os.path.abspath(Path(run) / wanted[len("write:"):])

    def hook(event, args):
        if event == "open" and isinstance(args[1], str) and set(args[1]) & set("wax+") and \
                isinstance(args[0], (str, os.PathLike)) and os.path.abspath(args[0]) == target:
            _kill(wanted)

    sys.addaudithook(hook)
