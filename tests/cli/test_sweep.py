"""``varprobe sweep``: bad widths are one line and exit 2 before anything runs; a sweep resumes like grid."""
from __future__ import annotations

import pandas as pd
import pytest

from varprobe.cli import main
from varprobe.record import load_run

TINY = ["--steps", "1", "--batch-size", "8", "--data-limit", "32", "--threads", "1", "--seeds", "0,1"]


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("widths, extra, fragment", [
    ("8", [], "--widths: a sweep needs at least two widths to fit a slope, got 1 (8); valid: e.g. 8,16,32,64"),
    ("8,16,8", [], "--widths: width 8 is given more than once in 8,16,8; valid: each width once"),
    ("0,8", [], "'0' is not a positive integer (valid: 1, 2, ...)"),
    ("-4,8", [], "'-4' is not a positive integer"),
    ("", [], "--widths: a sweep needs at least two widths to fit a slope, got 0 (none)"),
    ("4,8", ["--scheme", "gn"], "model 'simple_cnn' with scheme 'gn' and width 4 cannot be built: "
                                "num_channels (4) must be divisible by num_groups (8); widths that build: 8, 16"),
])
def test_bad_widths_are_one_line_and_exit_2(tmp_path, capsys, widths, extra, fragment):
    out = tmp_path / "s"
    assert _exit_code(["sweep", f"--widths={widths}", *extra, *TINY, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert captured.out == "" and "Traceback" not in captured.err and len(lines) == 2
    assert lines[0].startswith("usage: varprobe sweep") and lines[1].startswith("varprobe sweep: error: ")
    assert fragment in lines[1], lines[1]
    assert not out.exists()


def test_sweep_writes_slopes_and_figure_and_resumes(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["sweep", "--model", "simple_cnn", "--scheme", "plain", "--widths", "4,8", *TINY, "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "slopes (" in first and "over widths 4,8 and 2 seed(s)" in first
    slopes = pd.read_csv(out / "slopes.csv")
    assert list(slopes.columns) == ["layer", "role", "quantity", "step", "slope", "ci_low", "ci_high", "n", "verdict"]
    assert (out / "coord_check.png").stat().st_size > 0
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 4 and {load_run(r).config["width"] for r in runs} == {4, 8}
    starts = {r.name: load_run(r).meta["start_time"] for r in runs}
    assert main(argv) == 0  # everything finished: nothing runs again, the same table
    assert capsys.readouterr().out == first
    assert {r.name: load_run(r).meta["start_time"] for r in runs} == starts
    pd.testing.assert_frame_equal(pd.read_csv(out / "slopes.csv"), slopes)
