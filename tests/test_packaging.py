"""varprobe as a user installs it.

``python -m build`` (without isolation: the virtualenv's pinned setuptools, nothing downloaded)
makes an sdist and, from it, a wheel; both pass ``twine check --strict``. The wheel holds the
package alone, every module of it. Installed into a fresh virtualenv with the constraints, the
wheel's dependencies resolve offline against what is installed, and the README's own-model
example, taken from README.md itself, runs there from a temporary directory on the installed
package, never on the repository's.

The fresh virtualenv sees the test interpreter's site-packages through a ``.pth`` file (torch is
not installed a second time) and gets the wheel with ``pip install --no-deps --no-index``; its own
site-packages comes first on ``sys.path``, so ``import varprobe`` finds the installed wheel.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import varprobe

ROOT = Path(__file__).resolve().parents[1]
#: README.md marks its own-model example with this line; the first ```python block after it runs.
EXAMPLE_MARKER = "<!-- example: own model -->"
SDIST_FILES = {"PKG-INFO", "README.md", "pyproject.toml", "setup.cfg", "CHANGELOG.md", "CITATION.cff"}
DIST_INFO_FILES = {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt"}


def readme_example(text: str) -> str:
    """The code of the first fenced ``python`` block after the line holding :data:`EXAMPLE_MARKER`.

    Raises:
        AssertionError: naming the marker, when README.md has no such line or no block after it.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if EXAMPLE_MARKER in line), None)
    assert start is not None, f"README.md has no line with {EXAMPLE_MARKER!r} before its own-model example"
    opening = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```python"), None)
    assert opening is not None, f"README.md has no ```python block after {EXAMPLE_MARKER!r}"
    closing = next((i for i in range(opening + 1, len(lines)) if lines[i].strip() == "```"), None)
    assert closing is not None, f"the ```python block after {EXAMPLE_MARKER!r} in README.md is not closed"
    return "\n".join(lines[opening + 1:closing]) + "\n"


def _env() -> dict[str, str]:
    """The environment of every subprocess: no PYTHONPATH (it would put the repository's varprobe
    first), no GPU, matplotlib without a display."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(args: list[str | os.PathLike], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (f"{' '.join(map(str, args))} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _pip(python: Path, *args: str | os.PathLike, cwd: Path) -> subprocess.CompletedProcess:
    """This interpreter's pip acting on the virtualenv of ``python`` (which has no pip of its own)."""
    return _run([sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check", *args], cwd)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel of this checkout, built as ``make wheel`` builds them."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT], cwd=out)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, f"build made {sorted(p.name for p in out.iterdir())}"
    return {"sdist": sdists[0], "wheel": wheels[0]}


@pytest.fixture(scope="module")
def installed(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed and the test interpreter's packages visible;
    returns its python."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _pip(python, "install", "--no-deps", "--no-index", "-c", ROOT / "constraints.txt", dist["wheel"], cwd=env_dir)
    site_dir = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         env_dir).stdout.strip())
    parents = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site_dir / "_varprobe_test_parent.pth").write_text("".join(f"{p}\n" for p in parents))
    return python


def test_readme_example_is_the_first_python_block_after_the_marker() -> None:
    text = f"```python\nnot this\n```\n{EXAMPLE_MARKER}\n```\nnor this\n```\n```python\nx = 1\n```\n```python\n```\n"
    assert readme_example(text) == "x = 1\n"
    with pytest.raises(AssertionError, match=re.escape(EXAMPLE_MARKER)):
        readme_example(text.replace(EXAMPLE_MARKER, ""))


def test_wheel_holds_the_package_alone_and_every_module_of_it(dist: dict[str, Path]) -> None:
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
    info = f"varprobe-{varprobe.__version__}.dist-info/"
    package = {n for n in names if n.startswith("varprobe/")}
    assert names - package == {info + f for f in DIST_INFO_FILES}, sorted(names - package)
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "varprobe").rglob("*.py")}
    assert package == modules, (f"in the wheel, not a module of the package: {sorted(package - modules)}; "
                                f"a module left out of the wheel: {sorted(modules - package)}")


def test_sdist_holds_the_package_and_its_metadata_files_and_no_tests(dist: dict[str, Path]) -> None:
    top = f"varprobe-{varprobe.__version__}/"
    with tarfile.open(dist["sdist"]) as tar:
        names = {m.name[len(top):] for m in tar.getmembers() if m.isfile()}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "varprobe").rglob("*.py")}
    others = {n for n in names - modules if not n.startswith("varprobe.egg-info/")}
    assert others == SDIST_FILES, sorted(others ^ SDIST_FILES)
    assert modules <= names, sorted(modules - names)


def test_twine_check_passes_for_the_wheel_and_the_sdist(dist: dict[str, Path]) -> None:
    proc = _run([sys.executable, "-m", "twine", "check", "--strict", dist["wheel"], dist["sdist"]], ROOT)
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_wheel_metadata_is_the_version_and_dependencies_of_the_source(dist: dict[str, Path]) -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    with zipfile.ZipFile(dist["wheel"]) as whl:
        meta = Parser().parsestr(whl.read(f"varprobe-{varprobe.__version__}.dist-info/METADATA").decode())
    assert meta["Version"] == varprobe.__version__
    requires = meta.get_all("Requires-Dist")
    assert [r for r in requires if "extra ==" not in r] == project["dependencies"]
    assert set(meta.get_all("Provides-Extra")) == set(project["optional-dependencies"])
    assert meta["Requires-Python"] == project["requires-python"]


def test_version_is_written_once_in_varprobe_init() -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "varprobe.__version__"}
    init = ast.parse((ROOT / "varprobe" / "__init__.py").read_text(encoding="utf-8"))
    literal = [n.value.value for n in init.body if isinstance(n, ast.Assign)
               and [getattr(t, "id", None) for t in n.targets] == ["__version__"]]
    assert literal == [varprobe.__version__], "varprobe.__version__ must be one string literal (setuptools reads it)"
    assert not re.search(r"^version\s*:", (ROOT / "CITATION.cff").read_text(encoding="utf-8"), re.M)
    from varprobe.record.meta import versions
    assert versions()["varprobe"] == varprobe.__version__
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    assert newest is not None and newest.group(1) == varprobe.__version__, "CHANGELOG.md's newest entry"


def test_wheel_dependencies_resolve_offline_under_the_constraints(dist: dict[str, Path], installed: Path) -> None:
    proc = _pip(installed, "install", "--dry-run", "--no-index", "-c", ROOT / "constraints.txt", dist["wheel"],
                cwd=installed.parent)
    assert "Would install" not in proc.stdout, proc.stdout


def test_installed_console_script_prints_the_version(installed: Path, tmp_path: Path) -> None:
    script = installed.parent / ("varprobe.exe" if os.name == "nt" else "varprobe")
    assert _run([script, "--version"], tmp_path).stdout.split() == ["varprobe", varprobe.__version__]


def test_readme_own_model_example_runs_on_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(readme_example((ROOT / "README.md").read_text(encoding="utf-8")))
    driver = ("import json, pathlib, runpy, varprobe\n"
              "runpy.run_path('example.py', run_name='__main__')\n"
              "runs = [json.loads(p.read_text())['status'] for p in pathlib.Path().rglob('meta.json')]\n"
              "print(json.dumps({'file': varprobe.__file__, 'runs': runs}))\n")
    proc = _run([installed, "-c", driver], tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    site_dir = Path(_run([installed, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         tmp_path).stdout.strip())
    assert Path(result["file"]).resolve().is_relative_to(site_dir.resolve()), result["file"]
    assert result["runs"] == ["finished"], f"the example should write one finished run: {result['runs']}"
