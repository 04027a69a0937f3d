"""The README and the docs stay true to the code: the field table is generated from the one help text of each field
and current, the README opens with the two fresh-machine commands, and every link, `kit/...` path, dotted
`kit.` name, `make` target and `kit` command the pages name exists."""

import importlib
import re
from pathlib import Path

import pytest

from kit.cli import fields_markdown

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def test_field_table_in_docs_recipes_is_current():
    text = (ROOT / "docs" / "recipes.md").read_text()
    table = re.search(r"<!-- fields:start -->\n(.*)\n<!-- fields:end -->", text, re.S)
    assert table, "docs/recipes.md lost its fields markers"
    assert table.group(1) == fields_markdown(), "regenerate with: kit fields --markdown (between the markers)"


def test_readme_starts_with_the_status_then_the_two_fresh_machine_commands():
    text = README.read_text()
    intro, first = text.split("\n## ")[:2]
    assert "**Status.**" in intro and "docs/benchmarks.md" in intro  # the honest status comes before anything else
    assert first.startswith("Fresh machine") and "make demo" in first and "make test" in first
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_stays_a_newcomers_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines: move details into docs/ and link them"


# ---------------------------------------------------------------------------------------------------------------
# Links, paths, names, targets, commands


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with that anchor in {rel(dest)}")
    assert problems == [], f"{rel(page)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_kit_paths_exist(page):
    paths = {p.rstrip(".,:;") for p in re.findall(r"(?<![\w/.-])kit/[\w./-]*", page.read_text())}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == [], f"{rel(page)} names paths that are not in the checkout: {missing}"


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                try:
                    obj = importlib.import_module(f"{obj.__name__}.{attr}")
                except (ModuleNotFoundError, AttributeError):
                    return False
            else:
                obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_dotted_kit_names_resolve(page):
    names = set(re.findall(r"(?<![\w/.-])(kit(?:\.[A-Za-z_]\w*)+)", page.read_text()))
    missing = sorted(n for n in names if not resolves(n))
    assert missing == [], f"{rel(page)} names what the code does not have: {missing}"


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_make_targets_exist(page):
    text = page.read_text()
    named = set(re.findall(r"`make ([\w-]+)", text))
    for block in FENCE.findall(text):
        named |= set(re.findall(r"^make ([\w-]+)", block, re.M))
    assert named - make_targets() == set(), f"{rel(page)} names make targets the Makefile lacks"


def kit_commands() -> set[str]:
    from kit.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def test_the_readme_cli_table_lists_every_command_and_no_other():
    text = README.read_text()
    section = text[text.index("## The CLI"):]
    section = section[:section.index("\n## ", 3)]
    listed = set(re.findall(r"^\| `kit (\w+)", section, re.M)) | set(re.findall(r"`, `kit (\w+)`", section))
    assert listed == kit_commands()


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_kit_commands_named_exist(page):
    text = page.read_text()
    named = set(re.findall(r"`kit ([a-z]+)", text))
    for block in FENCE.findall(text):
        named |= set(re.findall(r"^\$? ?kit ([a-z]+)", block, re.M))
    assert named - kit_commands() == set(), f"{rel(page)} names kit commands that do not exist"
