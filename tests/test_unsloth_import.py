"""Unsloth's import on CPU (scripts/unsloth_import_check.py): the pinned release imports, and every keyword argument
kit.models.loading passes FastLanguageModel.from_pretrained / get_peft_model is one the release takes.

The `unsloth` test needs the folder `make test-unsloth-import` installs profiles/unsloth-import.txt into
(.unsloth-import/, or KIT_UNSLOTH_DIR): skipped without it, failed without it where KIT_REQUIRE_UNSLOTH=1 (the make
target sets it). The check runs in a subprocess: importing Unsloth patches transformers, TRL and PEFT for the whole
process. The unmarked tests hold the check's own one-line failures against stand-ins for Unsloth (no Unsloth needed).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "unsloth_import_check.py"


def _check(pythonpath: Path, tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "UNSLOTH_COMPILE_LOCATION": str(tmp_path / "compiled")}
    return subprocess.run([sys.executable, str(CHECK), "--log", str(tmp_path / "check.log")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.unsloth
def test_pinned_unsloth_imports_and_takes_the_kits_arguments(tmp_path):
    folder = Path(os.environ.get("KIT_UNSLOTH_DIR") or ROOT / ".unsloth-import").resolve()
    if not (folder / "unsloth").is_dir():
        why = f"{folder} has no unsloth (make test-unsloth-import installs it)"
        if os.environ.get("KIT_REQUIRE_UNSLOTH") == "1":
            pytest.fail(f"KIT_REQUIRE_UNSLOTH=1 but {why}", pytrace=False)
        pytest.skip(why)
    done = _check(folder, tmp_path)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0:  # the check's own line names the package or the argument
        pytest.fail(lines[-1] if lines else f"exit {done.returncode}: {done.stderr.strip()[-500:]}", pytrace=False)
    print(lines[-1])
    assert lines[-1].startswith("unsloth import check: ok"), done.stdout
    # what the kit always passes, read back from the check's summary
    for name in ("max_seq_length", "load_in_4bit", "fast_inference", "max_lora_rank", "gpu_memory_utilization",
                 "random_state", "use_gradient_checkpointing", "target_modules"):
        assert name in lines[-1], lines[-1]
    assert not (tmp_path / "unsloth_compiled_cache").exists()  # Unsloth's compiled code went to the scratch folder


def _stand_in(tmp_path: Path, source: str) -> Path:
    folder = tmp_path / "stand-in"
    (folder / "unsloth").mkdir(parents=True)
    (folder / "unsloth" / "__init__.py").write_text(source)
    return folder


def test_a_missing_module_fails_in_one_line_naming_it(tmp_path):
    # as an unpinned dependency of Unsloth's import looks: a module-level import of a package not installed
    folder = _stand_in(tmp_path, "print('banner Unsloth prints')\nimport tyro_not_installed_here\n")
    done = _check(folder, tmp_path)
    assert done.returncode == 1
    assert done.stdout.count("\n") == 1 and done.stderr == "", (done.stdout, done.stderr)
    line = done.stdout.strip()
    assert line.startswith("unsloth import check: import unsloth failed: ModuleNotFoundError: No module named "
                           "'tyro_not_installed_here' [tyro_not_installed_here: not installed; add it to "
                           "profiles/unsloth-import.txt]"), line
    assert "banner Unsloth prints" in (tmp_path / "check.log").read_text()  # Unsloth's output: in the log only


def test_an_argument_the_release_lacks_fails_in_one_line_naming_it(tmp_path):
    # an older from_pretrained without fast_inference: the kit's argument would reach transformers through **kwargs
    folder = _stand_in(tmp_path, '''
class FastLanguageModel:
    @staticmethod
    def from_pretrained(model_name, max_seq_length=2048, dtype=None, load_in_4bit=True, **kwargs):
        return kwargs.get("token")

    @staticmethod
    def get_peft_model(model, r=16, target_modules=None, lora_alpha=16, lora_dropout=0.0,
                       use_gradient_checkpointing="unsloth", random_state=3407, modules_to_save=None):
        pass

    @staticmethod
    def for_inference(model):
        pass
''')
    (folder / "unsloth-2026.1.1.dist-info").mkdir()
    (folder / "unsloth-2026.1.1.dist-info" / "METADATA").write_text("Name: unsloth\nVersion: 2026.1.1\n")
    done = _check(folder, tmp_path)
    assert done.returncode == 1 and done.stdout.count("\n") == 1, (done.stdout, done.stderr)
    assert done.stdout.startswith("unsloth import check: FastLanguageModel.from_pretrained(fast_inference=...) "
                                  "failed: unsloth 2026.1.1 has no parameter 'fast_inference' "
                                  "(kit/models/loading.py unsloth_kwargs passes it;"), done.stdout
