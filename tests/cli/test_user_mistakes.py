"""Every user mistake in every command of the ``varprobe`` command line (and ``python -m
varprobe.cli``) is the usage line, one line naming the bad value, and exit 2: never a traceback or
an internal error (exit 1). The cases are what an adversarial user types: empty strings, blanks,
commas only, huge numbers, names too long for the file system, a path given twice, data too large
for memory. Nearly all fail before anything runs; the plot cases share one tiny run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from varprobe.experiment import RunConfig
from varprobe.plot import curves, draw, spp, transmission
from varprobe.record import load_runs

from tests.cli.test_cli import _exit_code, _lines

LONG = "a" * 300  # one name longer than any file system's NAME_MAX (255 bytes on Linux and macOS)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny finished run (3 steps, every quantity)."""
    from varprobe.experiment import run

    out = tmp_path_factory.mktemp("mistakes") / "r"
    threads = torch.get_num_threads()
    try:
        run(RunConfig(steps=3, batch_size=16, threads=1), out)
    finally:
        torch.set_num_threads(threads)
    return out


PLOT = ["plot", "@RUN", "--out", "fig.png"]
CURVES = [*PLOT, "--kind", "curves", "--quantity", "out.var"]
TINY = ["--steps", "2", "--batch-size", "8", "--threads", "1", "--out", "out"]

#: (argv, fragments of the one error line). "@RUN" stands for the tiny run's directory.
MISTAKES = [
    # empty selections: refused by the one parser of comma lists (not drawn into a traceback or a wrong hint)
    ([*CURVES, "--layers", ""], ["--layers", "'' is empty", "the kind's own choice"]),
    ([*CURVES, "--layers", "  "], ["--layers", "'  ' is empty"]),
    ([*PLOT, "--kind", "spp", "--steps", ""], ["--steps", "'' is empty", "0,100,299"]),
    ([*PLOT, "--kind", "transmission", "--steps", ""], ["--steps", "'' is empty", "0,100,299"]),
    ([*PLOT, "--kind", "spp", "--schemes", ""], ["--schemes", "'' is empty", "all schemes"]),
    ([*CURVES, "--layers", ",,"], ["--layers", "',,'", "empty item"]),
    (["grid", *TINY, "--seeds", ""], ["--seeds", "'' is empty", "the default 0"]),
    (["grid", *TINY, "--lrs", " , "], ["--lrs", "' , '", "empty item"]),
    # a quantity that is blank, or layers of a step-level quantity (drawn silently without them before)
    ([*PLOT, "--kind", "curves", "--quantity", ""], ["quantity '' is empty", "heatmap, curves"]),
    ([*PLOT, "--kind", "curves", "--quantity", "loss", "--layers", "0"], ["'loss' is step-level", "[0]"]),
    # paths: blank, or a name too long for the file system (an OSError and exit 1 before)
    (["run", *TINY[:-1], ""], ["--out", "'' is not a path"]),
    (["run", *TINY[:-1], " "], ["--out", "' ' is not a path"]),
    (["run", *TINY[:-1], LONG], ["--out", "300 bytes", "at most"]),
    (["grid", *TINY[:-1], f"{LONG}/g"], ["--out", "300 bytes", "at most"]),
    (["reproduce", "--out", LONG], ["--out", "300 bytes"]),
    (["reproduce", "--out", ""], ["--out", "'' is not a path"]),
    (["plot", "@RUN", "--kind", "spp", "--out", f"{LONG}.png"], ["--out", "304 bytes"]),
    (["plot", LONG, "--kind", "spp", "--out", "fig.png"], ["RUN_DIR", "300 bytes"]),
    (["plot", "", "--kind", "spp", "--out", "fig.png"], ["RUN_DIR", "'' is not a path"]),
    # the same run twice would be drawn as two runs (a mean of two identical runs with a band)
    (["plot", "@RUN", "@RUN", "--kind", "spp", "--out", "fig.png"], ["'@RUN' is given twice", "once"]),
    (["plot", "@RUN", "@RUN/.", "--kind", "spp", "--out", "fig.png"], ["'@RUN' and '@RUN/.'", "same directory"]),
    (["plot", "@RUN", "@RUN*", "--kind", "spp", "--out", "fig.png"], ["'@RUN' (matched by '@RUN*')", "twice"]),
    # counts too large for a C int or for memory (OverflowError, MemoryError and exit 1 before)
    (["grid", *TINY, "--jobs", "99999999999"], ["--jobs", "'99999999999'", "valid: 1 to 1024"]),
    (["reproduce", "--jobs", "99999999999999999", "--out", "rep"], ["--jobs", "valid: 1 to 1024"]),
    (["reproduce", "--seeds", "99999999999999", "--out", "rep"], ["--seeds", "'99999999999999'", "valid: 1 to 1000"]),
    (["run", *TINY, "--data", "synthetic", "--size", "99999999"], ["'synthetic'", "99999999x99999999",
                                                                    "does not fit in memory", "--size"]),
]


@pytest.mark.parametrize("argv, fragments", MISTAKES, ids=[" ".join(a)[:70] for a, _ in MISTAKES])
def test_a_user_mistake_is_one_line_and_exit_2(argv, fragments, run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = str(run_dir)
    argv = [a.replace("@RUN", run) for a in argv]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert _exit_code(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    usage, error = _lines(captured.err)  # the usage line and ONE error line
    assert usage.startswith(f"usage: varprobe {argv[0]}")
    assert error.startswith(f"varprobe {argv[0]}: error: ")
    for fragment in fragments:
        assert fragment.replace("@RUN", run) in error, (fragment, error)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing started, nothing written


def test_python_m_entry_point_refuses_in_one_line(tmp_path):
    """``python -m varprobe.cli``: the same one line and exit 2 (here: the empty --layers that was
    an AttributeError)."""
    done = subprocess.run([sys.executable, "-m", "varprobe.cli", "plot", str(tmp_path), "--kind", "curves",
                           "--quantity", "out.var", "--layers", "", "--out", str(tmp_path / "f.png")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    usage, error = _lines(done.stderr)
    assert error == ("varprobe plot: error: argument --layers: '' is empty; give at least one value, e.g. "
                     "conv1,stage1.*,3, or leave the option out for the kind's own choice")


# -- the same selections through the Python API: one ValueError naming the value and the valid ones -------
@pytest.fixture(scope="module")
def frame(run_dir) -> pd.DataFrame:
    return load_runs([run_dir])


@pytest.mark.parametrize("call, fragments", [
    (lambda f: curves(f, "out.var", layers=[]), ["layers=[]", "selects no layer", "features.0.conv"]),
    (lambda f: spp(f, steps=[]), ["steps=[]", "selects no step", "recorded steps: 0 to 2"]),
    (lambda f: transmission(f, steps=[]), ["steps=[]", "selects no step", "recorded steps: 0 to 2"]),
    (lambda f: transmission(f, steps=[float("nan")]), ["nan", "not an integer step", "0 to 2"]),
    (lambda f: draw(f, "spp", schemes=[]), ["schemes=[]", "selects no run", "schemes of the runs: pws"]),
    (lambda f: draw(f, "curves", " "), ["quantity ' ' is empty", "heatmap, curves"]),
    (lambda f: curves(f, "loss", layers=[0]), ["'loss' is step-level", "[0]"]),
], ids=["curves-layers", "spp-steps", "transmission-steps", "transmission-nan", "draw-schemes", "blank-quantity",
        "step-level-layers"])
def test_an_empty_or_bad_selection_is_one_value_error(call, fragments, frame):
    with pytest.raises(ValueError) as info:
        call(frame)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
