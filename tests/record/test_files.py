"""The one write path: files get open()'s permissions under the umask, an output directory never
has a file replaced that varprobe did not write, and names read off disk stay inside their folder."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from varprobe.experiment import RunConfig, run
from varprobe.record.files import MARK_NAME, OutputDir, WriteRefused, atomic_write, inside, write_output

TINY = RunConfig(model="simple_cnn", scheme="pws", data="digits", batch_size=16, steps=2, threads=1, flush_every=1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_every_file_varprobe_writes_has_the_permissions_open_gives(tmp_path, umask):
    """Issue 22, bug 4: meta.json came from mkstemp (0600) while chunks and model.pt were 0644, so
    another user could not load a run on a shared file system. Every file of a real run, and of an
    output directory, is now 0666 & ~umask, as ``open(path, "w")`` makes it."""
    old = os.umask(umask)
    try:
        run(TINY, tmp_path / "run")
        OutputDir(tmp_path / "report", "report").write_text("claims.md", "# claims\n")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("what open() gives")
    finally:
        os.umask(old)
    expected = _mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~umask
    written = _files(tmp_path / "run") + _files(tmp_path / "report")
    names = {p.name for p in written}
    assert {"meta.json", "model.pt", ".lock", "chunk-000000.parquet", "claims.md", MARK_NAME} <= names
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(expected) for p in written}


def test_a_file_varprobe_did_not_write_is_never_replaced(tmp_path):
    out = OutputDir(tmp_path / "d", "report")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "claims.md").write_text("my notes")
    with pytest.raises(WriteRefused, match=r"claims.md was not written by varprobe"):
        out.write_text("claims.md", "report")
    with pytest.raises(WriteRefused, match=r"refusing to write into .*: claims.md was not written by varprobe"):
        out.check(["claims.json", "claims.md"])
    assert (tmp_path / "d" / "claims.md").read_text() == "my notes"

    out.write_text("claims.json", "{}")  # a new name: created, and listed
    assert json.loads((tmp_path / "d" / MARK_NAME).read_text())["files"].keys() == {"claims.json"}
    out.write_text("claims.json", '{"a": 1}')  # its own file: replaced
    assert (tmp_path / "d" / "claims.json").read_text() == '{"a": 1}'


def test_a_file_edited_since_varprobe_wrote_it_is_not_replaced(tmp_path):
    out = OutputDir(tmp_path, "report")
    out.write_text("claims.md", "report v1")
    (tmp_path / "claims.md").write_text("report v1 with my annotations")
    with pytest.raises(WriteRefused, match="claims.md was changed since varprobe wrote it"):
        out.write_text("claims.md", "report v2")
    assert (tmp_path / "claims.md").read_text() == "report v1 with my annotations"


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_a_symlink_or_directory_in_a_files_place_is_refused(tmp_path, kind):
    target = tmp_path / "mine.txt"
    target.write_text("mine")
    out = OutputDir(tmp_path / "d", "report")
    out.write_text("other.md", "x")
    if kind == "symlink":
        (tmp_path / "d" / "fig.png").symlink_to(target)
    else:
        (tmp_path / "d" / "fig.png").mkdir()
    with pytest.raises(WriteRefused, match="fig.png is a symlink" if kind == "symlink" else "not a regular file"):
        out.write("fig.png", b"png")
    assert target.read_text() == "mine"


@pytest.mark.parametrize("mark", ['{"name": "my package"}', "not json", '{"format": "varprobe-output", "files": []}'])
def test_a_mark_that_is_not_varprobes_is_refused(tmp_path, mark):
    (tmp_path / MARK_NAME).write_text(mark)
    (tmp_path / "a.png").write_text("x")
    with pytest.raises(WriteRefused, match="is not varprobe's list of the files it wrote"):
        OutputDir(tmp_path, "plot").write("b.png", b"png")
    assert (tmp_path / MARK_NAME).read_text() == mark


@pytest.mark.parametrize("name", ["../setup.py", "../../etc/passwd", "/etc/passwd", "a/../../x", "", ".", "a/.."])
def test_names_read_off_disk_must_stay_inside_their_directory(tmp_path, name):
    (tmp_path / "docs").mkdir()
    with pytest.raises(ValueError, match="leads outside|is not a file name"):
        inside(tmp_path / "docs", name, "figure name")
    with pytest.raises(ValueError, match="leads outside|is not a file name"):
        OutputDir(tmp_path / "docs", "figures").write(name, b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_a_symlink_leading_out_of_the_directory_is_outside(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "out").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="leads outside"):
        inside(tmp_path / "docs", "out/setup.py")
    assert inside(tmp_path / "docs", "standard/shift.png") == tmp_path / "docs" / "standard" / "shift.png"


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    atomic_write(path, b"old")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_write_output_creates_the_parent_and_marks_it(tmp_path):
    path = write_output(tmp_path / "figs" / "curves.png", b"png", "plot")
    assert path.read_bytes() == b"png"
    mark = json.loads((tmp_path / "figs" / MARK_NAME).read_text())
    assert mark["kind"] == "plot" and list(mark["files"]) == ["curves.png"]


def test_nothing_is_written_inside_a_run(tmp_path):
    """A run directory holds only the run format's files: a figure or report into it or its stats/,
    a run or a grid root inside it, are refused in one line naming the run; nothing changes. A
    foreign file there would make the run one that overwrite refuses to replace."""
    from varprobe.experiment import grid
    from varprobe.record import RunWriter, check_run
    run_dir = tmp_path / "r"
    run(TINY, run_dir)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    for where in (run_dir, run_dir / "stats", run_dir / "analysis"):
        with pytest.raises(WriteRefused, match=rf"inside the varprobe run {run_dir}"):
            OutputDir(where, "plot").write("x.png", b"png")
    with pytest.raises(FileExistsError, match=rf"run path {run_dir / 'sub'} is inside the varprobe run {run_dir}"):
        RunWriter(run_dir / "sub", {})
    for root in (run_dir, run_dir / "sub"):
        with pytest.raises(FileExistsError, match=rf"grid root .* the varprobe run {run_dir}"):
            grid(TINY, root, seeds=[1], progress=False)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before and check_run(run_dir) == []
    (tmp_path / "pkg").mkdir()  # someone else's meta.json does not make a run
    (tmp_path / "pkg" / "meta.json").write_text('{"name": "my package"}')
    OutputDir(tmp_path / "pkg" / "figs", "plot").write("x.png", b"png")
