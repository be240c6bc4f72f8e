"""The notebooks in ``notebooks/`` are committed with the outputs that ``make notebooks`` makes.

``make notebooks`` runs ``notebooks/run.py``, which executes every notebook in a fresh kernel of
this interpreter at the notebooks' default settings (``VARPROBE_SMALL=0``: large enough that every
figure shows what the text says; see ``run.kernel_env``) and writes it back with its outputs. Without
executing, this test checks the committed files:

- every figure over training (a cell that calls ``plot.curves``, ``heatmap``, ``shift`` or
  ``decomposition``) prints how many steps it shows, and each shows at least
  ``run.MIN_RECORDED_STEPS``;
- each file is small and readable on a code host: made at the default settings (stamped in its
  metadata), every code cell that holds code has an output, execution counts run 1, 2, ... (one run,
  top to bottom), no error or stderr output, at least one PNG figure, no widget state, no execution
  timestamps, no path of this machine, under ``run.MAX_BYTES``.

It does not trust the committed outputs to still run: it executes each notebook once more with
that same ``run.execute`` at the small settings (``VARPROBE_SMALL=1``, seconds per notebook) and
checks that no cell raises, that the kernel ran this interpreter, that the first line says which
settings it ran with, and what a run at other settings can check against the committed outputs:
the same cells print, show tables and draw figures, in the same order (``run.output_kinds``).
Their numbers are not compared: they come from other settings.
"""
from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("varprobe_notebooks_run", ROOT / "notebooks" / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

NOTEBOOKS = run.NOTEBOOKS
EXPECTED = ("01-quickstart", "02-variance-transmission-theory", "03-bn-wn-pws", "04-your-own-model",
            "05-attribution", "06-lightning-and-hf", "07-width-sweeps")
IDS = [p.stem for p in NOTEBOOKS]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _has_code(source: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in source.splitlines())


def test_the_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


def _notebook(cells: list[tuple[str, list]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for source, outputs in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = outputs
        nb.cells.append(cell)
    return nb


def test_a_figure_over_training_counts_only_with_its_printed_recorded_steps():
    png = nbformat.v4.new_output("display_data", data={"image/png": "", "text/plain": "<Figure>"})
    printed = lambda n: nbformat.v4.new_output("stream", name="stdout", text=f"{n} recorded steps\n")  # noqa: E731
    nb = _notebook([("plot.curves(frame, 'loss')", [printed(30), png]),
                    ("plot.heatmap(frame, 'out.var')", [printed(12), png]),
                    ("plot.decomposition(frame)", [png]),
                    ("plot.spp(frame)", [png]),  # over depth, not over training
                    ("print(1)", [printed(3)])])
    assert run.recorded_steps(nb) == [(0, 1, [30]), (1, 1, [12]), (2, 1, [])]
    assert run.output_kinds(nb) == [["stdout", "image/png+text/plain"]] * 2 + [["image/png+text/plain"]] * 2 \
        + [["stdout"]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_figure_over_training_shows_at_least_20_recorded_steps(path):
    nb = nbformat.read(path, as_version=4)
    for i, figures, counts in run.recorded_steps(nb):
        assert figures >= 1, f"{path.name}: code cell {i} calls a plot over training and shows no figure"
        assert len(counts) == figures, \
            f"{path.name}: code cell {i} shows {figures} figure(s) over training and prints {len(counts)} " \
            "'N recorded steps' line(s)"
        assert min(counts) >= run.MIN_RECORDED_STEPS, \
            f"{path.name}: code cell {i} draws {min(counts)} recorded steps, fewer than {run.MIN_RECORDED_STEPS} " \
            "(rerun make notebooks at the default settings)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_is_small_and_shows_its_outputs(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.encode()) < run.MAX_BYTES, f"{path.name} is {len(text.encode())} bytes"
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata, f"{path.name}: widget state in the notebook metadata"
    assert nb.metadata.get("varprobe", {}).get("outputs_made_on"), \
        f"{path.name}: no outputs_made_on stamp in its metadata (rerun make notebooks)"
    assert nb.metadata["varprobe"].get("settings") == "default", \
        f"{path.name}: outputs made at {nb.metadata['varprobe'].get('settings')!r} settings, not the default ones " \
        "(rerun make notebooks)"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{path.name}: not executed top to bottom in one run (rerun make notebooks)"
    pngs = 0
    for i, cell in enumerate(code):
        assert "execution" not in cell.metadata, f"{path.name}: code cell {i} keeps execution timestamps"
        if _has_code(cell.source):
            assert cell.outputs, f"{path.name}: code cell {i} has no output"
        for o in cell.outputs:
            assert o.output_type != "error", f"{path.name}: code cell {i} has an error output"
            assert not (o.output_type == "stream" and o.name == "stderr"), \
                f"{path.name}: code cell {i} writes to stderr: {o.text[:200]!r}"
            assert WIDGET_MIME not in o.get("data", {}), f"{path.name}: code cell {i} has a widget"
            pngs += "image/png" in o.get("data", {})
    assert pngs >= 1, f"{path.name}: no figure"
    homes = [str(ROOT), sys.prefix, sys.base_prefix, os.path.expanduser("~")]
    for home in {h for h in homes if len(h) > 1}:
        assert home not in text, f"{path.name}: contains the machine path {home}"
    sources = [cell.source for cell in code]
    settings = next((s for s in sources if "VARPROBE_SMALL" in s), None)
    assert settings is not None and "SETTINGS" in settings, f"{path.name}: no settings cell reading VARPROBE_SMALL"
    assert any("LARGER SETTINGS" in s for s in sources), f"{path.name}: no larger-settings cell"


@pytest.fixture(scope="module")
def reruns(request):
    """The notebooks the selected rerun tests need, executed at the small settings two at a time
    (each kernel runs one torch thread), with one more cell at the end that prints the kernel's
    interpreter: path -> future of the executed notebook."""
    wanted = [item.callspec.params["path"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_notebook_reruns_at_the_small_settings"]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1))
    futures = {p: pool.submit(run.execute, p, extra_cells=["import sys; print(sys.executable)"], small=True)
               for p in wanted}
    yield futures
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_reruns_at_the_small_settings(path, reruns):
    committed = nbformat.read(path, as_version=4)
    rerun = reruns[path].result()
    errors = [o for cell in rerun.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors
    ran = "".join(o.get("text", "") for o in rerun.cells[-1].outputs if o.output_type == "stream").strip()
    assert os.path.realpath(ran) == os.path.realpath(sys.executable)
    settings = next(c for c in rerun.cells if c.cell_type == "code" and "VARPROBE_SMALL" in c.source)
    assert settings.outputs[0].text.startswith("small settings (VARPROBE_SMALL=1)")
    want, got = run.output_kinds(committed), run.output_kinds(rerun)[:-1]
    assert len(want) == len(got)
    for i, (w, g) in enumerate(zip(want, got)):
        assert w == g, (f"{path.name}, code cell {i}: the committed outputs are {w}, a rerun at the small settings "
                        f"makes {g} (rerun make notebooks)")
