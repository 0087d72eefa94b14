"""The test tree's own rules: unit tests mirror the packages, never import the integration
suite's helpers, and share builders through conftest.py rather than test modules."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

UNIT = REPO / "tests" / "unit"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _unit_modules() -> list[Path]:
    modules = sorted(UNIT.rglob("*.py"))
    assert len(modules) > 50  # control: the walk finds the suite
    return modules


def test_unit_tests_import_nothing_of_the_integration_suite() -> None:
    offending = {
        str(path.relative_to(REPO)): sorted(m for m in _imports(path) if "integration" in m)
        for path in _unit_modules()
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_no_test_module_imports_another() -> None:
    """What tests share is a fixture or a builder in conftest.py, or a helper module."""
    offending = {
        str(path.relative_to(REPO)): sorted(
            m
            for m in _imports(path)
            if m.startswith("tests.") and m.split(".")[-1].startswith("test_")
        )
        for path in _unit_modules()
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_the_unit_tree_mirrors_the_packages() -> None:
    directories = [
        path.relative_to(UNIT)
        for path in sorted(UNIT.rglob("*"))
        if path.is_dir() and path.name not in ("__pycache__", "golden")
    ]
    assert directories  # control
    missing = [str(d) for d in directories if not (REPO / d / "__init__.py").is_file()]
    assert missing == []
