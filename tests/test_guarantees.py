"""The Guarantees page of the documentation (docs/guarantees.md) names the tests behind each
guarantee: they must exist, and the counts it states must be those of its tables."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _section() -> str:
    return (REPO / "docs" / "guarantees.md").read_text()


def _tables(section: str) -> list[list[list[str]]]:
    """Each markdown table of the section as rows of cells (header and rule dropped)."""
    tables, current = [], None
    for line in section.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append([c.strip() for c in line.strip("|").split("|")])
        else:
            current = None
    return [t[2:] for t in tables]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_named_test_exists():
    refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", _section())
    assert len(refs) >= 30
    missing = [f"{f}::{name}" for f, name in refs if not (REPO / f).is_file() or name not in _test_names(REPO / f)]
    assert missing == []


def test_stated_counts_match_the_tables():
    section = _section()
    faults, bad_inputs, invariants = _tables(section)
    stated = re.search(r"\*\*(\d+) fault scenarios, (\d+) kinds of bad input, (\d+) invariants\.\*\*", section)
    assert stated, "the counts sentence is missing"
    assert tuple(map(int, stated.groups())) == (len(faults), len(bad_inputs), len(invariants))
    for row in faults + bad_inputs + invariants:
        assert "tests/" in row[-1], row  # every row names its test
