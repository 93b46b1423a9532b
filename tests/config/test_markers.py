"""Every test that drives Chromium carries the `browser` marker, so `-m "not browser"` runs without a browser."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
BROWSER_FIXTURES = {"page", "browser"}  # tests/conftest.py: Playwright's Chromium and a page in it


def _marks(decorators_or_values) -> set[str]:
    """Names X of pytest.mark.X among decorators (or a pytestmark value: one mark or a list of them)."""
    names = set()
    for node in decorators_or_values:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute) and sub.value.attr == "mark":
                names.add(sub.attr)
    return names


def browser_tests_without_the_marker(root: Path) -> list[str]:
    missing = []
    for path in sorted(root.rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marks = _marks(
            node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        )
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                if {a.arg for a in node.args.args} & BROWSER_FIXTURES and "browser" not in module_marks | _marks(
                    node.decorator_list
                ):
                    missing.append(f"{path.relative_to(root)}::{node.name}")
    return missing


def test_every_test_using_the_browser_is_marked_browser():
    assert not browser_tests_without_the_marker(TESTS), "add pytest.mark.browser (or a module pytestmark) to these"


def test_the_check_finds_an_unmarked_browser_test(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_unmarked(page): pass\n"
        "@pytest.mark.browser\ndef test_marked(page, live_server): pass\n"
        "def test_no_browser(db): pass\n"
    )
    (tmp_path / "test_module_marked.py").write_text(
        "import pytest\npytestmark = [pytest.mark.browser, pytest.mark.django_db]\ndef test_a(page): pass\n"
    )
    assert browser_tests_without_the_marker(tmp_path) == ["test_sample.py::test_unmarked"]
