"""What the command line says besides its result: a progress bar where stderr is a terminal (seen
through a real pseudo-terminal, as a user sees it), none where it is not or with ``--quiet``, and a
closing hint whose ``varprobe plot`` command works when pasted into a shell."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch

from varprobe.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--steps", "5", "--batch-size", "32", "--threads", "1"]
#: tqdm's rate: "12.3step/s", or "1.2s/step" when a step takes more than a second.
RATE = r"(\d+\.\d+step/s|\d+\.\d+s/step)"


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _env() -> dict[str, str]:
    """This checkout first; tqdm not switched off from outside (``TQDM_DISABLE``)."""
    return {**{k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}, "PYTHONPATH": str(ROOT)}


def _in_terminal(argv: list[str], cwd: Path, size: tuple[int, int] | None) -> str:
    """Everything ``python -m varprobe.cli argv`` writes to a pseudo-terminal (stdin, stdout and
    stderr) of ``size`` = (columns, lines), or one that reports no size (0 x 0) for None."""
    master, slave = pty.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "varprobe.cli", *argv], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=_env(), close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def _pasted(text: str, cwd: Path) -> Path:
    """Run the hint's indented ``plot`` command line of ``text`` in a shell in ``cwd``, as pasted;
    return the figure it names, checked to be a PNG it wrote."""
    (line,) = [ln.strip() for ln in text.splitlines() if ln.startswith("  ") and " plot " in ln]
    done = subprocess.run(line, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (line, done.stderr)
    figure = cwd / done.stdout.strip().splitlines()[-1]
    assert figure.read_bytes().startswith(b"\x89PNG")
    return figure


def test_run_in_a_terminal_shows_steps_loss_and_rate_and_its_plot_command_works(tmp_path):
    out = Path("my runs") / "pws 1"  # quoting: the pasted command must survive the spaces
    seen = _in_terminal(["run", *TINY, "--out", str(out)], tmp_path, size=(100, 30))
    bar = seen[seen.index("\rrun:"):seen.index("finished")]
    assert re.search(rf"run: 100%\|.*\| 5/5 \[[0-9:]+<[0-9:]+, +{RATE}, loss=[0-9.e+-]+\]", bar), bar
    assert re.search(r"\| 0/5 \[", bar)  # drawn from the start, not only at the end
    assert max(len(part) for part in re.split(r"[\r\n]", bar)) <= 100  # as wide as the terminal
    assert f"the run is in {out}; to look at it:" in seen
    figure = _pasted(seen, tmp_path)
    assert figure == tmp_path / "my runs" / "pws 1-spp.png"  # beside the run, never inside it


def test_grid_in_a_terminal_that_reports_no_size_still_shows_its_bar(tmp_path):
    """A pseudo-terminal of 0 x 0 (as under ``script``, or some CI runners): tqdm alone draws nothing
    there; the bar falls back to 80 columns."""
    seen = _in_terminal(["grid", *TINY, "--schemes", "plain,pws", "--out", "g"], tmp_path, size=None)
    assert re.search(rf"grid: 100%\|.*\| 2/2 \[[0-9:]+<[0-9:]+, +{RATE.replace('step', 'run')}", seen), seen
    assert max(len(part) for part in re.split(r"[\r\n]", seen) if "grid:" in part) <= 80
    assert "the grid's runs are in g; to look at them:" in seen
    assert _pasted(seen, tmp_path) == tmp_path / "g-spp.png"


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (of no known size)."""

    def isatty(self) -> bool:
        return True


def test_quiet_turns_the_bar_and_the_hint_off_even_in_a_terminal(tmp_path, monkeypatch, capsys):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["run", *TINY, "--out", str(tmp_path / "loud")]) == 0
    assert "5/5" in err.getvalue() and "loss=" in err.getvalue()
    err.seek(0), err.truncate()
    assert main(["run", *TINY, "--quiet", "--out", str(tmp_path / "quiet")]) == 0
    assert err.getvalue() == ""
    assert capsys.readouterr().out.count("finished") == 2  # the result line stays


def test_without_a_terminal_no_bar_but_the_closing_hint(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", *TINY, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and captured.out.startswith("finished")  # stdout: the result
    assert "\r" not in captured.err and "step/s" not in captured.err and "loss=" not in captured.err
    *_, where, command = captured.err.splitlines()
    assert where == f"the run is in {out}; to look at it:"
    assert command.startswith("  ") and f" plot {out} --kind spp --out {tmp_path / 'r-spp.png'}" in command


def test_reproduce_ends_with_the_report_and_its_figures(tmp_path, monkeypatch, capsys):
    import types

    def reproduce(profile, out, seeds, jobs=1, progress=True):
        assert progress is False  # stderr is not a terminal here
        out.mkdir(parents=True)
        for name in ("claims.md", "claims.json", "figures.md", "spp-large-lr.png", "shift.png"):
            (out / name).write_text("x")

    monkeypatch.setitem(sys.modules, "varprobe.claims", types.SimpleNamespace(reproduce=reproduce))
    assert main(["reproduce", "--out", str(tmp_path / "rep")]) == 0
    rep = tmp_path / "rep"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"the report is {rep / 'claims.md'}; its 2 figures are beside it in {rep} (shift.png, spp-large-lr.png), "
        f"with their captions in {rep / 'figures.md'}")
