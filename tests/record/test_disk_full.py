"""A full disk (ENOSPC) while a run is written: one RunWriteError naming the path and the OS
error, earlier chunks intact, no temp file left, the run marked failed where meta.json can still
be written, and nothing left behind when the disk is full at start.

Faults are injected twice: for real, on a tiny tmpfs mounted for the test (needs root and a
kernel that allows the mount; skipped with the reason otherwise), and by making ``os.write`` /
``os.fsync`` / ``os.pwrite`` raise ``OSError(ENOSPC)`` (always runs)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from varprobe.record import RunWriteError, RunWriter, load_run


def frame(i: int, rows: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(i)  # random floats: incompressible, each chunk takes real space
    return pd.DataFrame({"step": np.full(rows, i), "layer": [f"conv{d}" for d in range(rows)],
                         "depth": np.arange(rows),
                         "mode": "train", "module_type": "Conv2d", "role": "conv", "quantity": "out.var",
                         "value": rng.standard_normal(rows)})


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.rglob("*.tmp"))


def assert_one_clean_error(exc: RunWriteError, path: Path) -> None:
    text = str(exc)
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert "\n" not in text and str(path) in text and "No space left on device (ENOSPC)" in text
    assert exc.__cause__ is None and exc.__suppress_context__  # prints as one exception


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs mounted at tmp_path/disk; skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a real ENOSPC needs root to mount a tiny tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# -- a real ENOSPC -------------------------------------------------------------------------------

def test_real_enospc_mid_run_keeps_written_chunks_and_marks_failed(tiny_disk):
    run = tiny_disk / "r"
    w = RunWriter(run, {"seed": 0})
    written = []
    with pytest.raises(RunWriteError) as exc:
        for i in range(100):  # ~16 KiB a chunk: the disk fills within 16
            w.append(frame(i))
            written.append(frame(i))
    assert 2 <= len(written) < 100
    assert_one_clean_error(exc.value, run / "stats" / f"chunk-{len(written):06d}.parquet")
    assert w.closed and leftovers(run) == []
    back = load_run(run)  # every chunk written before the failure, bit for bit
    pd.testing.assert_frame_equal(back.frame, pd.concat(written, ignore_index=True), check_exact=True)
    assert not back.damaged and back.writer_alive is False
    # the failed chunk's temp file is removed first, which frees room for meta.json
    assert "the run is marked failed in meta.json" in str(exc.value)
    assert back.status == "failed" and "ENOSPC" in back.meta["error"]["message"]
    assert back.meta["chunks"] == len(written)
    w.close()  # a no-op: the writer closed itself


def test_real_enospc_at_start_leaves_nothing_behind(tiny_disk):
    empty = tiny_disk / "empty"
    empty.mkdir()
    fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while True:
            os.write(fd, os.urandom(512))
    except OSError as full:
        assert full.errno == errno.ENOSPC
    finally:
        os.close(fd)
    for target in (tiny_disk / "new" / "run", empty):
        with pytest.raises(RunWriteError) as exc:
            RunWriter(target, {"seed": 0})
        assert_one_clean_error(exc.value, target)
    assert not (tiny_disk / "new").exists()  # created by the writer, so removed
    assert empty.is_dir() and list(empty.iterdir()) == []  # not created by it: kept, empty


# -- ENOSPC injected at the os level (always runs) -------------------------------------------

def failing(real, fail_calls: set[int]):
    """``real`` wrapped to raise ENOSPC on the given (1-based) calls."""
    count = 0

    def fake(*args):
        nonlocal count
        count += 1
        if count in fail_calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)
    return fake


def test_chunk_and_meta_both_fail_keeps_last_good_meta(tmp_path, monkeypatch):
    run = tmp_path / "r"
    w = RunWriter(run)
    w.append(frame(0))
    w.append(frame(1))
    good = json.loads((run / "meta.json").read_text())
    monkeypatch.setattr(os, "write", failing(os.write, set(range(1, 100))))  # every write fails
    with pytest.raises(RunWriteError) as exc:
        w.append(frame(2))
    monkeypatch.undo()
    assert_one_clean_error(exc.value, run / "stats" / "chunk-000002.parquet")
    assert "meta.json could not be updated either and keeps its last good content" in str(exc.value)
    assert "the 2 chunk(s) already written are intact" in str(exc.value)
    assert json.loads((run / "meta.json").read_text()) == good and leftovers(run) == []
    back = load_run(run)
    assert back.status == "interrupted" and not back.damaged  # "running", but nobody writes it
    pd.testing.assert_frame_equal(back.frame, pd.concat([frame(0), frame(1)], ignore_index=True))


def test_fsync_failure_removes_the_temp_chunk_and_marks_failed(tmp_path, monkeypatch):
    run = tmp_path / "r"
    w = RunWriter(run)
    w.append(frame(0))
    monkeypatch.setattr(os, "fsync", failing(os.fsync, {1}))  # the chunk's fsync only
    with pytest.raises(RunWriteError) as exc:
        w.append(frame(1))
    monkeypatch.undo()
    assert_one_clean_error(exc.value, run / "stats" / "chunk-000001.parquet")
    assert leftovers(run) == [] and not (run / "stats" / "chunk-000001.parquet").exists()
    back = load_run(run)
    assert back.status == "failed" and back.meta["chunks"] == 1 and back.meta["end_time"]
    assert back.meta["error"]["type"] == "RunWriteError" and "ENOSPC" in back.meta["error"]["message"]
    pd.testing.assert_frame_equal(back.frame, frame(0))
    with pytest.raises(RuntimeError, match="closed"):
        w.append(frame(2))


def test_meta_update_failure_after_a_chunk_keeps_the_chunk(tmp_path, monkeypatch):
    run = tmp_path / "r"
    w = RunWriter(run)
    monkeypatch.setattr(os, "write", failing(os.write, {2}))  # 1: the chunk, 2: meta.json
    with pytest.raises(RunWriteError) as exc:
        w.append(frame(0))
    monkeypatch.undo()
    assert_one_clean_error(exc.value, run / "meta.json")
    back = load_run(run)
    assert back.status == "failed" and back.meta["chunks"] == 1 and leftovers(run) == []
    pd.testing.assert_frame_equal(back.frame, frame(0))


def test_close_and_update_meta_failures_are_one_error(tmp_path, monkeypatch):
    for action in ("update_meta", "close"):
        run = tmp_path / action
        w = RunWriter(run)
        w.append(frame(0))
        monkeypatch.setattr(os, "write", failing(os.write, set(range(1, 100))))
        with pytest.raises(RunWriteError) as exc:
            w.update_meta(best=1.0) if action == "update_meta" else w.close()
        monkeypatch.undo()
        assert_one_clean_error(exc.value, run / "meta.json")
        assert w.closed and leftovers(run) == []
        assert load_run(run).status == "interrupted" and len(load_run(run).frame) == len(frame(0))
        RunWriter(run, overwrite=True).close()  # the lock was released


@pytest.mark.parametrize("stage", ["lock", "meta"])
def test_full_disk_at_start_removes_what_the_writer_created(tmp_path, monkeypatch, stage):
    name, calls = ("pwrite", {1}) if stage == "lock" else ("write", {1})
    monkeypatch.setattr(os, name, failing(getattr(os, name), calls))
    target = tmp_path / "a" / "b" / "run"
    with pytest.raises(RunWriteError) as exc:
        RunWriter(target)
    assert_one_clean_error(exc.value, target)
    assert list(tmp_path.iterdir()) == []  # a/, a/b/, run/, .lock, stats/: all gone
    (tmp_path / "mine").mkdir()
    monkeypatch.setattr(os, name, failing(getattr(os, name), calls))
    with pytest.raises(RunWriteError):
        RunWriter(tmp_path / "mine")
    monkeypatch.undo()
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []
    RunWriter(tmp_path / "mine").close()  # and a rerun is not blocked
