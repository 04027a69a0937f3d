"""Colab notebooks: valid nbformat v4, each names an existing recipe, code parses as Python, and regenerating them
from the recipes changes nothing (so a recipe edit without `make notebooks` fails here)."""

import ast
import importlib.util
import re
from pathlib import Path

import nbformat  # the dev extra installs it
import pytest

from kit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "colab" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_of(cell_source: str) -> str:
    """A code cell without its IPython shell (!) and magic (%) lines."""
    return "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in cell_source.splitlines())


def test_there_is_a_notebook_for_each_16gb_recipe():
    names = {p.stem for p in NOTEBOOKS}
    assert {"qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "llama3.2-1b", "llama3.2-3b", "qwen3-1.7b",
            "gemma3-1b"} <= names
    assert names == {p.stem for p in _generator().notebook_recipes()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_valid_names_its_recipe_and_parses(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    recipes = {m for src in code for m in re.findall(r'RECIPE = "([^"]+)"', src)}
    assert recipes == {f"recipes/{path.stem}.yaml"}
    load_recipe(ROOT / recipes.pop())  # exists and validates
    for i, src in enumerate(code):
        ast.parse(python_of(src), filename=f"{path.name}[code cell {i}]")
    text = "\n".join(c.source for c in nb.cells)
    for step in ("kit fit", "kit train", "kit compare", "load_for_inference", "kit export", "app.py --share"):
        assert step in text, f"{path.name} lacks {step}"
    assert "colab.research.google.com/github/" in nb.cells[0].source  # Open in Colab badge


def test_regenerating_changes_nothing(tmp_path):
    gen = _generator()
    assert gen.main(["--root", str(tmp_path)]) == 0
    written = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == gen.render_all()  # deterministic
    for rel, text in written.items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run `make notebooks`"
