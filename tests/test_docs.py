"""The front page and the documentation site: the README stays a short front page, the site builds
with ``mkdocs build --strict`` (a broken link, reference or cross-reference fails it), and its
generated pages hold what they are generated from."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import warnings
from importlib import import_module
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_readme_is_a_front_page_of_at_most_12_kB_with_its_example_marked():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 12_000
    assert re.search(r"<!-- example: own model -->\n```python\n.+?\n```", text, re.DOTALL)
    heads = [h for h in re.findall(r"^## (.+)$", text, re.MULTILINE)]
    assert heads == ["Install", "Probe your own model", "Two commands", "Supported layers", "Documentation"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built strictly from the repository (notebooks rendered from their committed
    outputs, never executed)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _text(page: Path) -> str:
    return re.sub(r"<[^>]+>", "", page.read_text())


def test_site_builds_strictly_with_every_page(site):
    assert (site / "index.html").is_file() and (site / "objects.inv").is_file()
    for page in ("getting-started", "own-model", "integrations", "quantities", "claims", "gallery",
                 "cli", "guarantees", "benchmarks", "api", "notebooks", "reproduce-quick", "reproduce-standard",
                 "width-sweeps",
                 *(f"notebooks/{nb.stem}" for nb in (REPO / "notebooks").glob("*.ipynb"))):
        assert (site / page / "index.html").is_file(), page


def test_quantities_and_command_line_pages_are_generated(site):
    from varprobe.vocabulary import QUANTITIES
    quantities = _text(site / "quantities" / "index.html")
    assert [q for q in QUANTITIES if q not in quantities] == []
    cli = _text(site / "cli" / "index.html")
    for command in ("run", "grid", "reproduce", "plot"):
        assert f"usage: varprobe {command}" in cli
    assert "--schemes" in cli and "--quantity" in cli


def test_every_public_name_is_documented_once(site):
    """Each name of an API package's ``__all__`` is rendered on exactly one API page, or its page
    links to the one that documents it; no object is rendered on two pages."""
    hooks = _load_hooks()
    where: dict[str, list[str]] = {}
    for name in hooks.API_PAGES:
        html = (site / "api" / name / "index.html").read_text()
        for ident in set(re.findall(r'<h2 id="(varprobe\.[\w.]+)"', html)):
            where.setdefault(ident, []).append(name)
        package = import_module(f"varprobe.{name}")
        text = _text(site / "api" / name / "index.html")
        missing = [n for n in getattr(package, "__all__", []) if n not in text]
        assert missing == [], (name, missing)
    assert len(where) > 100 and {k: v for k, v in where.items() if len(v) > 1} == {}


def _load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("alias,target", [("varprobe.experiment.claims", "varprobe.claims"),
                                          ("varprobe.experiment.attribution", "varprobe.claims.attribution")])
def test_old_claims_import_paths_warn_and_name_the_one_to_use(alias, target):
    sys.modules.pop(alias, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = import_module(alias)
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [
        f"{alias} is deprecated: import from {target}"]
    assert module.__all__ and all(getattr(module, n) is getattr(import_module(target), n) for n in module.__all__)


def test_a_docstring_role_that_refers_to_nothing_is_a_warning(tmp_path, caplog):
    """The API reference's docstring roles: one whose target does not exist is a warning (so the
    strict build fails); reST code marks become Markdown."""
    import griffe
    spec = importlib.util.spec_from_file_location("griffe_rest", REPO / "docs" / "griffe_rest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "pkgx").mkdir()
    (tmp_path / "pkgx" / "__init__.py").write_text(
        '"""See :func:`nothing`, :func:`real` and ``code``."""\n\n\ndef real():\n    """Real."""\n')
    with caplog.at_level("WARNING"):
        pkg = griffe.load("pkgx", search_paths=[tmp_path],
                          extensions=griffe.load_extensions(module.RestToMarkdown()))
    assert [r.getMessage() for r in caplog.records if "docstring refers" in r.getMessage()] == [
        "pkgx: the docstring refers to :func:`nothing`, which does not exist"]
    assert pkg.docstring.value == "See `nothing`, `real` and `code`."
