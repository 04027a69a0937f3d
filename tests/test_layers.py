"""The kit's architecture, held by its import statements (read with `ast`, nothing imported):

- layers, bottom to top (LAYERS): a module imports modules of its own layer and of the layers below, never above;
- no import cycle among the kit's modules (imports inside functions count too);
- the kit's own imports stand at the top of each module; one inside a function says why on its line (a comment);
- the light entry points (`import app`, kit.recipe, kit.runs, kit.cli, ...) leave torch, the training stack and
  matplotlib out of the process (checked in a fresh one);
- only kit/models/loading.py imports unsloth (which must come before trl, transformers and peft).

The checkers are plain functions of a source tree; the tests at the bottom run each on a small tree with the faults
in it, so that each can be seen to fail.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. A module belongs to the layer whose name is it or a package above it; "kit" alone is the package
# itself (its __init__ imports nothing).
LAYERS = (
    ("kit", "kit.errors"),                              # L0
    ("kit.runs",),                                      # L1 the run folder's contract, metrics, plots
    ("kit.task",),                                      # L2 answers, data, the demo's task, rewards
    ("kit.recipe",),                                    # L3
    ("kit.models",),                                    # L4
    ("kit.eval",),                                      # L5
    ("kit.train",),                                     # L6
    ("kit.tools",),                                     # L7
    ("kit.app",),                                       # L8
    ("kit.cli", "kit.__main__", "kit.data", "app"),     # L9 entry points; kit.data re-exports for reward files
)
# Function-local imports of the kit (each with its reason on its line): a few, where an import must wait.
MAX_LOCAL_IMPORTS = 6


# --- reading a tree ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    source: str   # the importing module
    path: str     # its file, relative to the tree's root
    line: int
    target: str   # the module imported (a kit module where it is one)
    local: bool   # inside a function
    reason: str   # the comment on the statement's lines, "" if none


def modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for kit/**/*.py and app.py under root."""
    found = {}
    for path in sorted((root / "kit").rglob("*.py")) + [root / "app.py"]:
        if not path.is_file():
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _comments(text: str) -> dict[int, str]:
    return {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.COMMENT}


def imports(root: Path) -> list[Import]:
    """Every import statement of the tree (module level and inside functions), resolved to module names: one per
    module a statement imports."""
    known = modules(root)
    out: list[Import] = []
    for name, path in known.items():
        text = path.read_text()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        file = _File(name, str(path.relative_to(root)), package, _comments(text), known)
        _visit(ast.parse(text, str(path)), False, file, out)
    return out


@dataclass
class _File:
    name: str
    path: str
    package: str
    comments: dict
    known: dict


def _visit(node, local: bool, file: _File, out: list) -> None:
    for child in ast.iter_child_nodes(node):
        inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            lines = range(child.lineno, child.end_lineno + 1)
            reason = " ".join(file.comments[n] for n in lines if n in file.comments)
            for target in dict.fromkeys(_targets(child, file.package, file.known)):
                out.append(Import(file.name, file.path, child.lineno, target, inner, reason))
        _visit(child, inner, file, out)


def _targets(node, package: str, known: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package, up level - 1
        anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    # `from kit.task import data` imports the module kit.task.data; `from kit.runs import STAGES`, kit.runs
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def is_kit(module: str) -> bool:
    return module == "app" or module == "kit" or module.startswith("kit.")


def layer_of(module: str, layers=LAYERS) -> int | None:
    best = None
    for level, names in enumerate(layers):
        for prefix in names:
            named = module == prefix or (prefix != "kit" and module.startswith(prefix + "."))
            if named and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    return None if best is None else best[0]


# --- the checks --------------------------------------------------------------------------------------------------


def unlayered(root: Path, layers=LAYERS) -> list[str]:
    return [f"{path.relative_to(root)} ({name}) is in no layer: add it to LAYERS in tests/test_layers.py"
            for name, path in modules(root).items() if layer_of(name, layers) is None]


def upward_imports(root: Path, layers=LAYERS) -> list[str]:
    """'kit/x.py imports kit.y (layer N > M)' for each import of a higher layer."""
    found = []
    for imp in imports(root):
        if not is_kit(imp.target):
            continue
        mine, theirs = layer_of(imp.source, layers), layer_of(imp.target, layers)
        if mine is not None and theirs is not None and theirs > mine:
            found.append(f"{imp.path} imports {imp.target} (layer {theirs} > {mine}), line {imp.line}")
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the kit modules its imports run: the target and the packages above it (their __init__ runs first),
    except the importer's own packages (already running)."""
    graph: dict[str, set[str]] = {name: set() for name in modules(root)}
    for imp in imports(root):
        if not is_kit(imp.target) or imp.target == imp.source:
            continue
        own = {imp.source.rsplit(".", n)[0] for n in range(imp.source.count(".") + 1)}
        parts = imp.target.split(".")
        for n in range(1, len(parts) + 1):
            module = ".".join(parts[:n])
            if module not in own and module in graph:
                graph[imp.source].add(module)
    return graph


def cycles(root: Path) -> list[str]:
    """One 'a -> b -> a' for each group of modules that import each other, directly or through others."""
    graph = import_graph(root)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    found = []
    for group in groups:
        loop = _loop(graph, group)
        more = sorted(group - set(loop))
        found.append(" -> ".join(loop) + (f" (with {', '.join(more)} in the same tangle)" if more else ""))
    return found


def _loop(graph, group) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & group):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return sorted(group)


def local_kit_imports(root: Path) -> list[Import]:
    return [imp for imp in imports(root) if imp.local and is_kit(imp.target)]


def heavy_after_import(module_names: list[str], heavy: tuple[str, ...]) -> list[str]:
    """In a fresh process, import the modules; which of `heavy` are in sys.modules then."""
    code = ("import importlib, json, sys\n"
            f"for m in {module_names!r}: importlib.import_module(m)\n"
            f"print(json.dumps([h for h in {heavy!r} if h in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, f"importing {module_names} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(problems: list[str], what: str) -> str:
    return f"{len(problems)} {what}:\n  " + "\n  ".join(problems)


# --- the kit -----------------------------------------------------------------------------------------------------


def test_every_module_is_in_a_layer():
    problems = unlayered(ROOT)
    assert not problems, _report(problems, "modules in no layer")


def test_no_module_imports_a_higher_layer():
    problems = upward_imports(ROOT)
    assert not problems, _report(problems, "imports of a higher layer (move the code down, or the import up)")


def test_no_import_cycle():
    problems = cycles(ROOT)
    assert not problems, _report(problems, "import cycles")


def test_kit_imports_are_at_the_top_or_say_why():
    local = local_kit_imports(ROOT)
    listing = [f"{i.path}:{i.line} {i.target}  {i.reason}" for i in local]
    print("\n".join(["function-local imports of the kit:", *listing]))
    silent = [f"{i.path}:{i.line} imports {i.target} inside a function with no comment saying why"
              for i in local if not i.reason]
    assert not silent, _report(silent, "function-local kit imports without a reason (move them to the top)")
    assert len(local) <= MAX_LOCAL_IMPORTS, _report(listing, f"function-local kit imports (at most "
                                                             f"{MAX_LOCAL_IMPORTS})")


HEAVY = ("torch", "transformers", "trl", "peft", "unsloth", "matplotlib")
LIGHT = [["kit"], ["kit.recipe"], ["kit.task.data"], ["kit.task.rewards"], ["kit.runs"], ["kit.runs.metrics"],
         ["kit.cli"], ["kit.eval.evaluate"], ["kit.models.fit"], ["app"],
         # as `python app.py` starts: the app and the modules behind its tabs
         ["app", "kit.app.ui", "kit.app.controller", "kit.app.chat", "kit.app.views", "kit.runs.plots"]]


@pytest.mark.parametrize("names", LIGHT, ids=["+".join(n) for n in LIGHT])
def test_light_imports_leave_torch_out(names):
    held = heavy_after_import(names, HEAVY)
    assert held == [], f"import {', '.join(names)} pulls in {held} (import them inside the function that needs them)"


def test_only_the_loading_module_imports_unsloth():
    found = sorted({i.path for i in imports(ROOT) if i.target.split(".")[0] == "unsloth"})
    assert found == [str(Path("kit/models/loading.py"))], f"unsloth is imported in {found}"


# --- the checkers, on a tree with the faults in it ---------------------------------------------------------------

TREE = {
    "kit/__init__.py": "",
    "kit/errors.py": "class KitError(Exception):\n    pass\n",
    # L1 importing L6, which imports it back: upward, and a cycle
    "kit/runs/__init__.py": "from kit.errors import KitError\nfrom kit.train.flow import train\n",
    "kit/runs/metrics.py": "from kit.runs import KitError\n",  # its own package: neither upward nor a cycle
    "kit/task/__init__.py": "",
    "kit/task/data.py": "from . import rows\n",  # relative, same layer
    "kit/task/rows.py": "import json\n",
    "kit/train/__init__.py": "",
    "kit/train/flow.py": ("from kit.runs import metrics\n\n\n"
                          "def train():\n"
                          "    from kit.task import data  # waits for the model: the reason\n"
                          "    from kit.task import (\n        rows,  # a reason inside the statement counts\n    )\n"
                          "    import kit.errors\n"
                          "    return data, rows, kit.errors\n"),
    "kit/train/a.py": "import kit.train.b\n",
    "kit/train/b.py": "def f():\n    from kit.train import a  # the cycle goes through a function: it counts\n",
    "kit/models/__init__.py": "",
    "kit/models/loading.py": "import unsloth\n",
    "kit/stray.py": "",
    "app.py": "from kit.train import flow\n",
}


@pytest.fixture
def faulty_tree(tmp_path):
    for name, text in TREE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checkers_find_each_fault(faulty_tree):
    assert unlayered(faulty_tree) == [
        "kit/stray.py (kit.stray) is in no layer: add it to LAYERS in tests/test_layers.py"]
    assert upward_imports(faulty_tree) == ["kit/runs/__init__.py imports kit.train.flow (layer 6 > 1), line 2"]
    assert sorted(cycles(faulty_tree)) == ["kit.runs -> kit.train.flow -> kit.runs",
                                           "kit.train.a -> kit.train.b -> kit.train.a"]
    local = local_kit_imports(faulty_tree)
    assert [(i.path, i.line, i.target, bool(i.reason)) for i in local] == [
        ("kit/train/b.py", 2, "kit.train.a", True),
        ("kit/train/flow.py", 5, "kit.task.data", True),
        ("kit/train/flow.py", 6, "kit.task.rows", True),
        ("kit/train/flow.py", 9, "kit.errors", False)]


def test_the_checkers_pass_a_tree_without_faults(faulty_tree):
    for name in ("kit/stray.py", "kit/train/a.py", "kit/train/b.py"):
        (faulty_tree / name).unlink()
    (faulty_tree / "kit/runs/__init__.py").write_text("from kit.errors import KitError\n")
    (faulty_tree / "kit/train/flow.py").write_text("import kit.errors\nfrom kit.runs import metrics\n\n\n"
                                                   "def train():\n    from kit.task import data  # a reason\n")
    assert unlayered(faulty_tree) == upward_imports(faulty_tree) == cycles(faulty_tree) == []
    assert [(i.target, i.reason) for i in local_kit_imports(faulty_tree)] == [("kit.task.data", "# a reason")]


def test_the_import_check_sees_a_heavy_module():
    assert heavy_after_import(["json"], ("json", "torch")) == ["json"]
