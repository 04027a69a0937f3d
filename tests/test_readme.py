"""The README's reference table is generated from the one help text of each field, and stays current."""

import re
from pathlib import Path

from kit.cli import fields_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_readme_field_table_is_current():
    text = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- fields:start -->\n(.*)\n<!-- fields:end -->", text, re.S)
    assert table, "README lost its fields markers"
    assert table.group(1) == fields_markdown(), "regenerate with: kit fields --markdown"


def test_readme_starts_with_the_two_fresh_machine_commands():
    text = (ROOT / "README.md").read_text()
    first = text.split("\n## ")[1]
    assert first.startswith("Fresh machine") and "make demo" in first and "make test" in first
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
