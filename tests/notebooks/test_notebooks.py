"""The notebooks in ``notebooks/`` are committed with the outputs that ``make notebooks`` makes.

``make notebooks`` runs ``notebooks/run.py``, which executes every notebook in a fresh kernel of
this interpreter at the committed settings (``VARPROBE_SMALL=1``, one thread; see
``run.kernel_env``) and writes it back with its outputs. This test does not trust the committed
outputs: it executes each notebook once more with that same ``run.execute`` and checks

- that no cell raises and that the kernel ran this interpreter;
- that every cell's text output (printed numbers, tables, the mime types and sizes of figures,
  see ``run.text_outputs``) is what is committed. Figures' pixels are not compared. On the kind of
  machine that made the outputs (``run.made_on``, stamped in the notebook's metadata) printed
  decimals may differ by one unit in their last printed digit or 0.1%. On another kind (other CPU
  kernels: training runs near collapse take other paths, rounding-level values differ) only the
  text around the numbers is compared: every word, every line, the same count of numbers. Anything
  else that differs means the committed outputs are stale: rerun ``make notebooks``.

and, without executing, that each committed file is small and readable on a code host: every code
cell that holds code has an output, execution counts run 1, 2, ... (one run, top to bottom), no
error or stderr output, at least one PNG figure, no widget state, no execution timestamps, no path
of this machine, under ``run.MAX_BYTES``.
"""
from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import re
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
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _has_code(source: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in source.splitlines())


def _numbers_close(a: str, b: str) -> bool:
    """Two printed numbers agree: integers exactly (counts, steps), others within one unit of the
    last printed digit or 0.1%."""
    x, y = float(a), float(b)
    if x == y:
        return True
    if not any(ch in a.lower() for ch in ".e") or not any(ch in b.lower() for ch in ".e"):
        return False
    mantissa = a.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(a.lower().split("e")[1]) if "e" in a.lower() else 0
    unit = 10.0 ** (exponent - decimals)
    return abs(x - y) <= max(1.0001 * unit, 1e-3 * max(abs(x), abs(y)))


def _lines_agree(committed: str, rerun: str) -> bool:
    if committed == rerun:
        return True
    if _NUMBER.sub("#", committed) != _NUMBER.sub("#", rerun):
        return False
    return all(_numbers_close(a, b) for a, b in zip(_NUMBER.findall(committed), _NUMBER.findall(rerun)))


def _words_agree(committed: str, rerun: str) -> bool:
    """The same text once every number is masked and runs of spaces (table alignment) are one."""
    def mask(line: str) -> str:
        return re.sub(r" +", " ", _NUMBER.sub("#", line)).strip()
    return mask(committed) == mask(rerun)


def test_the_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == list(EXPECTED)


def test_numbers_agree_only_within_the_last_printed_digit():
    assert _lines_agree("loss 0.1839; acc 0.928", "loss 0.1840; acc 0.927")
    assert _lines_agree("ratio 7.43e-07", "ratio 7.44e-07")
    assert not _lines_agree("loss 0.1839", "loss 0.1842")
    assert not _lines_agree("ratio 7.43e-07", "ratio 7.43e-06")
    assert not _lines_agree("plain: at chance", "plain: trained")
    assert not _lines_agree("6 runs", "6 runs, 1 collapsed")
    assert not _lines_agree("6 runs of 25 steps", "7 runs of 25 steps")
    # on another kind of machine: the words, not the numbers
    assert _words_agree("5  pws  0.50  collapsed  742.251", "5  pws  0.50  collapsed  790.723")
    assert _words_agree("0.1384  1.1824e-07", "0.1384   1.5706e-07")
    assert not _words_agree("pws 0.50 collapsed 742.251", "pws 0.50 finished 742.251")
    assert not _words_agree("6 runs", "6 runs, 1 collapsed")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_is_small_and_shows_its_outputs(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.encode()) < run.MAX_BYTES, f"{path.name} is {len(text.encode())} bytes"
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata, f"{path.name}: widget state in the notebook metadata"
    assert nb.metadata.get("varprobe", {}).get("outputs_made_on"), \
        f"{path.name}: no outputs_made_on stamp in its metadata (rerun make notebooks)"
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
    """The notebooks the selected rerun tests need, executed two at a time (each kernel runs one
    torch thread), with one more cell at the end that prints the kernel's interpreter: path ->
    future of the executed notebook."""
    wanted = [item.callspec.params["path"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_notebook_reruns_to_its_committed_outputs"]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1))
    futures = {p: pool.submit(run.execute, p, extra_cells=["import sys; print(sys.executable)"]) for p in wanted}
    yield futures
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_reruns_to_its_committed_outputs(path, reruns):
    committed = nbformat.read(path, as_version=4)
    rerun = reruns[path].result()
    errors = [o for cell in rerun.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors
    ran = "".join(o.get("text", "") for o in rerun.cells[-1].outputs if o.output_type == "stream").strip()
    assert os.path.realpath(ran) == os.path.realpath(sys.executable)
    want, got = run.text_outputs(committed), run.text_outputs(rerun)[:-1]
    assert len(want) == len(got)
    made_on = committed.metadata.get("varprobe", {}).get("outputs_made_on")
    agree = _lines_agree if made_on == run.made_on() else _words_agree
    for i, (w, g) in enumerate(zip(want, got)):
        same = len(w) == len(g) and all(agree(a, b) for a, b in zip(w, g))
        assert same, (f"{path.name}, code cell {i}: the committed output is not what the notebook makes now "
                      f"(rerun make notebooks; outputs made on {made_on}, this is {run.made_on()}, compared "
                      f"by {agree.__name__})\ncommitted:\n" + "\n".join(w) + "\nnow:\n" + "\n".join(g))
