"""Execute the notebooks in place with their outputs, at the committed settings (``make notebooks``).

Usage, from the repository root::

    .venv/bin/python notebooks/run.py                       # every notebooks/*.ipynb
    .venv/bin/python notebooks/run.py notebooks/01-quickstart.ipynb

Each notebook runs top to bottom in a fresh kernel of this interpreter (whatever other kernels are
installed), in a temporary working directory, with the environment of :func:`kernel_env`: the
notebooks' default settings (``VARPROBE_SMALL=0``: large enough that every figure shows what the
text says, at least :data:`MIN_RECORDED_STEPS` recorded steps in every figure over training), one
torch thread (``VARPROBE_THREADS=1``) and one BLAS/OpenMP thread, the inline matplotlib backend,
a fixed hash seed, and the Hugging Face and W&B clients offline (nothing is downloaded). The written file is made to diff cleanly between reruns
(:func:`clean`): no execution timestamps, no widget state, no interpreter version; a printed
line that differs from the committed one only in a wall-clock time keeps the committed text
(:func:`keep_committed_times`). A notebook that raises, whose file would exceed :data:`MAX_BYTES`,
or with a figure over training that does not print at least :data:`MIN_RECORDED_STEPS` recorded
steps, is not written and the command exits 1.

``tests/notebooks/test_notebooks.py`` executes the notebooks with this same :func:`execute` at the
small settings (``small=True``: ``VARPROBE_SMALL=1``, seconds per notebook) and checks what a rerun
at other settings can check against the committed outputs (:func:`output_kinds`), and the committed
outputs themselves (:func:`recorded_steps`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

__all__ = ["ROOT", "NOTEBOOKS", "MAX_BYTES", "CELL_TIMEOUT", "CELL_TIMEOUT_DEFAULT", "MIN_RECORDED_STEPS",
           "OVER_TRAINING", "kernel_env", "execute", "clean", "output_kinds", "recorded_steps",
           "keep_committed_times", "made_on", "main"]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_BYTES = 1_000_000  # per committed notebook, outputs included
CELL_TIMEOUT = 300     # seconds per cell at the small settings
CELL_TIMEOUT_DEFAULT = 1200  # ... and at the default settings (the committed outputs), on a busy machine
KERNEL = "python3"
#: Recorded steps every figure over training shows in the committed outputs, at least.
MIN_RECORDED_STEPS = 20
#: A code cell that calls one of these draws a figure over training steps; it prints
#: "<N> recorded steps" (:func:`recorded_steps`) for each such figure.
OVER_TRAINING = re.compile(r"\bplot\.(?:curves|heatmap|shift|decomposition)\(")
_RECORDED = re.compile(r"\b(\d+) recorded steps\b")

# Text that differs between two runs on the same machine: wall-clock times ("in 2.1 s") and the
# temporary directories the notebooks write their runs to.
_VOLATILE = [(re.compile(r"\b\d+(?:\.\d+)?(?= ?s\b(?!\.))"), "<t>"),
             (re.compile(r"(?:/private)?/(?:tmp|var/folders)/\S*?varprobe-[\w.-]*"), "<tmpdir>")]


def kernel_env(small: bool = False) -> dict[str, str]:
    """The kernel's environment: this process's, plus the notebooks' settings: the default ones
    (the committed outputs), or with ``small`` the small ones (the test suite's reruns)."""
    env = dict(os.environ)
    env.update({
        "VARPROBE_SMALL": "1" if small else "0",  # 1: the small settings (few steps)
        "VARPROBE_THREADS": "1",          # one torch thread: an OpenMP thread waiting for a busy core stalls
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONHASHSEED": "0",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled", "TQDM_DISABLE": "1",
    })
    # this checkout's varprobe first, whatever is installed in the interpreter
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _kernel_spec_manager(directory: Path) -> KernelSpecManager:
    """A kernelspec named python3 that runs ``sys.executable`` with ipykernel."""
    spec = directory / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(directory)])


def execute(path: str | os.PathLike, extra_cells: list[str] = (), small: bool = False) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` top to bottom and return it, outputs included, :func:`clean`,
    at the default settings (the committed outputs) or, with ``small``, the small ones.

    ``extra_cells`` are code cells appended before running (the test uses one to report the
    kernel's interpreter). Raises ``nbclient.exceptions.CellExecutionError`` on the first cell that
    raises, ``CellTimeoutError`` on one that runs past :data:`CELL_TIMEOUT` (small settings) or
    :data:`CELL_TIMEOUT_DEFAULT`; nothing is written.
    """
    nb = nbformat.read(path, as_version=4)
    for source in extra_cells:
        nb.cells.append(nbformat.v4.new_code_cell(source))
    with tempfile.TemporaryDirectory(prefix="varprobe-nbrun-") as tmp:
        kernels, cwd = Path(tmp) / "kernels", Path(tmp) / "cwd"
        cwd.mkdir()
        km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=_kernel_spec_manager(kernels))
        client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT if small else CELL_TIMEOUT_DEFAULT,
                                         kernel_name=KERNEL,
                                         record_timing=False, store_widget_state=False,
                                         resources={"metadata": {"path": str(cwd)}})
        client.execute(env=kernel_env(small), cwd=str(cwd))
    return clean(nb, "small" if small else "default")


def made_on() -> str:
    """The kind of machine whose float rounding the outputs carry: architecture, the CPU kernels
    torch dispatches to (``DEFAULT``, ``AVX2``, ``AVX512``, ...) and the torch version. Training
    runs near collapse diverge between kinds; on one kind, reruns are byte-identical."""
    import torch  # the kernel's torch: same interpreter, same machine

    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} torch {torch.__version__}"


def clean(nb: nbformat.NotebookNode, settings: str = "default") -> nbformat.NotebookNode:
    """Drop what changes between identical reruns: execution timestamps, widget state, the
    interpreter's version, and how consecutive prints of a cell were split into stream messages
    (merged into one output per run of stdout or stderr); keep outputs and execution counts.
    Stamps the notebook's metadata with :func:`made_on` and the ``settings`` the outputs were made
    with ("default" or "small"). Modifies and returns ``nb``."""
    nb.metadata.pop("widgets", None)
    nb.metadata["varprobe"] = {"outputs_made_on": made_on(), "settings": settings}
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL}
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            output.pop("transient", None)
            if (output.output_type == "stream" and outputs and outputs[-1].output_type == "stream"
                    and outputs[-1].name == output.name):
                outputs[-1].text += output.text  # how prints split into messages depends on timing
            else:
                outputs.append(output)
        cell.outputs = outputs
    return nb


def output_kinds(nb: nbformat.NotebookNode) -> list[list[str]]:
    """Per code cell, the kinds of its outputs in order, each once per run of equal kinds: stream
    names (``stdout``) and, for results and displays, their mime types (``image/png+text/plain``);
    error names. What a rerun at other settings makes as well: the same cells print, show tables
    and draw figures, whatever their numbers."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kinds: list[str] = []
        for o in cell.outputs:
            if o.output_type == "stream":
                kind = o.name
            elif o.output_type in ("execute_result", "display_data"):
                kind = "+".join(sorted(o.get("data", {})))
            else:
                kind = f"{o.output_type}:{o.get('ename', '')}"
            if not kinds or kinds[-1] != kind:
                kinds.append(kind)
        cells.append(kinds)
    return cells


def recorded_steps(nb: nbformat.NotebookNode) -> list[tuple[int, int, list[int]]]:
    """Per code cell that draws a figure over training (its source calls :data:`OVER_TRAINING`):
    (cell index among the code cells, figures it shows, the N of every "N recorded steps" it
    printed). A notebook prints one such count per figure over training."""
    out = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        if not OVER_TRAINING.search(cell.source):
            continue
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        figures = sum("image/png" in o.get("data", {}) for o in cell.outputs)
        out.append((i, figures, [int(n) for n in _RECORDED.findall(text)]))
    return out


def _mask(text: str) -> str:
    for pattern, mask in _VOLATILE:
        text = pattern.sub(mask, text)
    return text


def keep_committed_times(committed: nbformat.NotebookNode, new: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Where a stream output of ``new`` differs from the committed one only in wall-clock times or
    temporary paths (same cell source), keep the committed text, so that a rerun of unchanged code
    leaves the file unchanged. Modifies and returns ``new``."""
    for old_cell, cell in zip(committed.cells, new.cells):
        if cell.cell_type != "code" or old_cell.cell_type != "code" or old_cell.source != cell.source:
            continue
        for old_out, out in zip(old_cell.get("outputs", []), cell.outputs):
            if (out.output_type == old_out.output_type == "stream" and out.name == old_out.name
                    and out.text != old_out.text and _mask(out.text) == _mask(old_out.text)):
                out.text = old_out.text
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to run (default: notebooks/*.ipynb)")
    paths = parser.parse_args(argv).paths or NOTEBOOKS
    failed = 0
    for path in paths:
        start = time.perf_counter()
        committed = nbformat.read(path, as_version=4)
        try:
            nb = keep_committed_times(committed, execute(path))
        except (nbclient.exceptions.CellExecutionError, nbclient.exceptions.CellTimeoutError) as err:
            print(f"{os.path.relpath(path)}: a cell raised, not written\n{err}", file=sys.stderr)
            failed += 1
            continue
        short = [f"code cell {i}: {figures} figure(s), recorded steps {counts or 'not printed'}"
                 for i, figures, counts in recorded_steps(nb)
                 if len(counts) != figures or min(counts, default=0) < MIN_RECORDED_STEPS]
        if short:
            print(f"{os.path.relpath(path)}: a figure over training without {MIN_RECORDED_STEPS} recorded steps, "
                  f"not written: {'; '.join(short)}", file=sys.stderr)
            failed += 1
            continue
        text = nbformat.writes(nb) + "\n"
        size = len(text.encode())
        if size >= MAX_BYTES:
            print(f"{os.path.relpath(path)}: {size} bytes with outputs, over {MAX_BYTES}; not written", file=sys.stderr)
            failed += 1
            continue
        Path(path).write_text(text, encoding="utf-8")
        print(f"{os.path.relpath(path)}: {time.perf_counter() - start:.0f} s, {size / 1000:.0f} kB"
              + ("" if nbformat.writes(committed) + "\n" != text else ", unchanged"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
