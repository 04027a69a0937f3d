import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def _kit_cache(tmp_path_factory):
    """The tiny model is built once per test session into a private cache (seconds)."""
    cache = os.environ.get("KIT_TEST_CACHE") or str(tmp_path_factory.mktemp("kit-cache"))
    os.environ["KIT_CACHE"] = cache
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One short end-to-end run of the embedded demo recipe, shared by the tests that read a run folder."""
    from kit.train import train

    out = tmp_path_factory.mktemp("runs")
    # 30 warm-up steps at 3e-3 (the demo: 600 at 1e-3) are enough for the model to write text
    return train(ROOT / "recipes" / "demo.yaml",
                 ["sft.max_steps=30", "sft.learning_rate=3e-3", "grpo.max_steps=4", "grpo.save_steps=2",
                  "grpo.completions_every=2", f"run.output_dir={out}"])
