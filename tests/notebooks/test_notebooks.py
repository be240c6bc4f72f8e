"""Every notebook in ``notebooks/`` runs top to bottom, headlessly, with the small settings.

Each notebook is executed with nbclient in a fresh kernel running this interpreter (the virtualenv's
python, whatever other kernels are installed), with ``VARPROBE_SMALL=1`` in the environment and a
temporary working directory; any cell error fails the test. The committed files must stay small and
carry no outputs.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MAX_BYTES = 50_000
CELL_TIMEOUT = 300  # seconds per cell
EXPECTED = ("01-quickstart", "02-variance-transmission-theory", "03-bn-wn-pws", "04-your-own-model", "05-attribution", "06-lightning-and-hf")


def _ids(paths):
    return [p.stem for p in paths]


def test_the_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_is_small_and_stripped(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {i} has outputs (strip them)"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    settings = next((s for s in sources if "VARPROBE_SMALL" in s), None)
    assert settings is not None and "SETTINGS" in settings, f"{path.name}: no settings cell reading VARPROBE_SMALL"
    assert any("LARGER SETTINGS" in s for s in sources), f"{path.name}: no larger-settings cell"


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory):
    """A kernelspec named python3 that runs ``sys.executable`` (the venv's python) with ipykernel."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / "python3"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (varprobe tests)", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_with_small_settings(path, tmp_path, monkeypatch, kernel_spec_manager):
    monkeypatch.setenv("VARPROBE_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    # Last cell: report the kernel's interpreter, to check that the venv's python ran the notebook.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=kernel_spec_manager)
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the traceback) on the first failing cell
    ran = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream").strip()
    assert os.path.realpath(ran) == os.path.realpath(sys.executable)
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors
