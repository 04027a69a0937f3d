"""Heavy imports stay where they are needed: recipe, data, rewards, metrics, runs and the CLI import no torch,
and only kit/models/model.py imports unsloth."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIGHT = ["kit", "kit.recipe", "kit.task.data", "kit.task.rewards", "kit.runs.metrics", "kit.runs", "kit.cli", "kit.eval.evaluate",
         "kit.models.fit", "app"]


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_no_torch(module):
    code = (f"import sys; import {module}; heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'unsloth') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{module} pulls in {out.stdout.strip()}"


def test_only_model_module_imports_unsloth():
    for path in list((ROOT / "kit").glob("*.py")) + [ROOT / "app.py"]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "unsloth" for n in names):
                assert path.name == "model.py", f"{path.name} imports unsloth"
