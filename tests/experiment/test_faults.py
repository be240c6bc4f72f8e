"""Faults injected for real into training runs: a SIGKILLed process, a second process on the same
run directory, activations that overflow. What each test guarantees is listed in the documentation's
"Guarantees" section."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from varprobe.cli import main
from varprobe.experiment import RunConfig, run
from varprobe.record import load_run

REPO = Path(__file__).resolve().parents[2]
# A digits run long enough to be killed mid-way (about 15 ms a step on one thread).
ARGS = ["--model", "simple_cnn", "--data", "digits", "--batch-size", "32", "--steps", "400",
        "--threads", "1", "--flush-every", "10"]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "varprobe.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _wait_for(path_glob: str, root: Path, proc: subprocess.Popen, timeout: float = 90.0) -> Path:
    """The first file matching ``root/path_glob``, polled while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = sorted(root.glob(path_glob))
        if hits:
            return hits[0]
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before writing {path_glob}: {proc.stderr.read()}")
        time.sleep(0.01)
    pytest.fail(f"no {path_glob} under {root} after {timeout} s")


def _stop(proc: subprocess.Popen, sig: int, code: int) -> str:
    """Send ``sig``, check that the process exits with ``code`` within 30 s; its stderr."""
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == code
    return proc.stderr.read()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()


def test_sigkilled_grid_run_keeps_flushed_steps_and_a_rerun_redoes_it(tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["grid", *ARGS, "--no-progress", "--schemes", "pws", "--seeds", "0", "--out", str(out)]
    proc = _start(argv)
    try:
        _wait_for("*/stats/chunk-000002.parquet", out, proc)  # three flushes: steps 0..29 on disk
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (path,) = out.iterdir()
    killed = load_run(path)
    assert killed.status == "interrupted" and not killed.writer_alive
    assert "result" not in killed.meta and killed.skipped == []
    # meta.json counts a chunk just after the chunk is renamed into place: a kill in between leaves
    # one chunk on disk that meta.json does not count yet, and the reader reads it too.
    chunks = len(list((path / "stats").glob("chunk-*.parquet")))
    assert chunks >= 3 and killed.meta["chunks"] in (chunks, chunks - 1)
    flushed = chunks * 10
    steps = sorted(killed.frame["step"].unique())
    assert steps == list(range(flushed))  # every step up to the last flush, none half-written
    rows = killed.frame.groupby("step").size()
    # Each step complete: the same rows as every other (step 0 has no gw.sign_persistence yet).
    assert rows.loc[1:].nunique() == 1 and rows.loc[0] < rows.loc[1]

    assert main(argv) == 0  # the same grid again: the interrupted run restarts from scratch
    capsys.readouterr()
    redone = load_run(path)
    assert redone.status == "finished" and redone.meta["result"]["collapsed_at"] is None
    assert sorted(redone.frame["step"].unique()) == list(range(400))
    # One thread, same config: the killed run's records are exactly the redone run's first steps.
    head = redone.frame[redone.frame["step"] < flushed].reset_index(drop=True)
    pd.testing.assert_frame_equal(killed.frame, head, check_exact=True)


def test_second_process_is_refused_and_a_killed_writers_lock_is_not(tmp_path, capsys):
    out = tmp_path / "run"
    first = _start(["run", *ARGS, "--seed", "1", "--out", str(out)])
    try:
        _wait_for("stats/chunk-000000.parquet", out, first)
        with pytest.raises(SystemExit) as exc:
            main(["run", *ARGS, "--seed", "2", "--overwrite", "--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        err = err.strip().splitlines()  # after the run's announcement: the usage line and the reason
        assert err[-2].startswith("usage: varprobe run") and err[-1].startswith("varprobe run: error: ")
        assert f"{out} is already being written" in err[-1] and f"pid {first.pid}" in err[-1]
        assert first.poll() is None  # the first writer goes on, alone
        _wait_for("stats/chunk-000002.parquet", out, first)
    finally:
        _kill(first)
    alive = load_run(out)
    assert alive.config["seed"] == 1 and alive.status == "interrupted"  # nothing of the second run
    assert sorted(alive.frame["step"].unique()) == list(range(10 * len(list((out / "stats").glob("chunk-*")))))

    assert main(["run", *ARGS, "--steps", "3", "--seed", "2", "--overwrite", "--out", str(out)]) == 0
    capsys.readouterr()
    again = load_run(out)  # the dead process's lock did not block the new run
    assert again.status == "finished" and again.config["seed"] == 2
    assert sorted(again.frame["step"].unique()) == [0, 1, 2]


def test_overflowing_activations_are_recorded_and_mark_the_run_collapsed(tmp_path):
    """Plain convs at lr 50 with no logit bound: activations overflow to inf within a few steps."""
    config = RunConfig(model="simple_cnn", scheme="plain", data="digits", batch_size=32, steps=60, lr=50.0,
                       threads=1, collapse_var=math.inf, flush_every=2)
    collapsed = run(config, tmp_path / "nan")
    at = collapsed.meta["result"]["collapsed_at"]
    assert collapsed.status == "collapsed" and 0 < at < 59
    frame = collapsed.frame
    nonfinite = frame[frame["quantity"] == "out.nonfinite"].groupby("step")["value"].sum()
    loss = frame[frame["quantity"] == "loss"].set_index("step")["value"]
    assert nonfinite.loc[at] > 0 or not math.isfinite(loss.loc[at])  # why it stopped is on record
    assert (nonfinite.loc[:at - 1] == 0).all() and loss.loc[:at - 1].map(math.isfinite).all()
    assert frame["step"].max() == at and collapsed.meta["collapsed_step"] == at
    # Earlier records are intact: equal to a run of the same config stopped before the collapse.
    before = run(config.replace(steps=at), tmp_path / "before")
    assert before.status == "finished"
    pd.testing.assert_frame_equal(frame[frame["step"] < at].reset_index(drop=True), before.frame,
                                  check_exact=True)


def test_ctrl_c_stops_a_run_cleanly_and_keeps_what_it_recorded(tmp_path):
    out = tmp_path / "run"
    proc = _start(["run", *ARGS, "--out", str(out)])
    try:
        _wait_for("stats/chunk-000001.parquet", out, proc)
        err = _stop(proc, signal.SIGINT, 130)
    finally:
        _kill(proc)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "varprobe run: interrupted"
    stopped = load_run(out)
    assert stopped.status == "failed" and stopped.meta["error"]["type"] == "KeyboardInterrupt"
    assert not stopped.writer_alive  # the lock is released
    recorded = sorted(stopped.frame["step"].unique())
    assert recorded == list(range(len(recorded))) and len(recorded) >= 20  # flushed at exit too


# -- stop signals: SIGTERM and SIGHUP as Ctrl-C ----------------------------------------------------
# ``varprobe run`` with every completed probe step logged (one line each) to $VARPROBE_TEST_STEP_LOG:
# an observer only, so that a test knows how many steps were recorded when it sends the signal.
_LOGGED_CLI = """
import os, sys
from varprobe.probe import Probe
log, step = open(os.environ["VARPROBE_TEST_STEP_LOG"], "a", buffering=1), Probe.step
def logged(self, *args, **kwargs):
    step(self, *args, **kwargs)
    log.write(f"{self.current_step}\\n")
Probe.step = logged
from varprobe.cli.main import main
sys.exit(main())
"""


def _logged_steps(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_stops_a_run_cleanly_and_keeps_every_recorded_step(tmp_path, sig, code):
    out, log = tmp_path / "run", tmp_path / "steps.log"
    # flush_every 25: when the signal comes, up to 24 recorded steps are buffered, not yet on disk.
    argv = ["run", *ARGS, "--flush-every", "25", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", _LOGGED_CLI, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "VARPROBE_TEST_STEP_LOG": str(log)})
    try:
        deadline = time.monotonic() + 60
        while _logged_steps(log) < 37 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        recorded_before = _logged_steps(log)  # steps whose probe.step() had returned
        assert proc.poll() is None and recorded_before >= 37, "the run ended or stalled before the signal"
        err = _stop(proc, sig, code)
    finally:
        _kill(proc)
    name = signal.Signals(sig).name
    assert "Traceback" not in err and "Exception ignored" not in err
    announce, line = err.strip().splitlines()  # the run's announcement and ONE line about the stop
    assert announce.startswith("varprobe run: ") and line == f"varprobe run: stopped by {name} (signal {int(sig)})"
    stopped = load_run(out)
    assert stopped.status == "failed" and stopped.meta["error"]["type"] == name
    assert not stopped.writer_alive  # the lock is released
    steps = sorted(stopped.frame["step"].unique())
    # every step recorded up to the signal is on disk, the buffered ones too, and nothing half-written
    assert steps == list(range(len(steps))) and len(steps) >= recorded_before
    rows = stopped.frame.groupby("step").size()
    assert rows.loc[1:].nunique() == 1


def test_sigterm_during_a_grid_marks_the_run_for_a_rerun(tmp_path):
    out = tmp_path / "grid"
    argv = ["grid", *ARGS, "--no-progress", "--schemes", "pws", "--seeds", "0", "--out", str(out)]
    proc = _start(argv)
    try:
        _wait_for("*/stats/chunk-000001.parquet", out, proc)
        err = _stop(proc, signal.SIGTERM, 143)
    finally:
        _kill(proc)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "varprobe grid: stopped by SIGTERM (signal 15)"
    (path,) = out.iterdir()
    stopped = load_run(path)
    assert stopped.status == "failed" and stopped.meta["error"]["type"] == "SIGTERM" and not stopped.writer_alive
    steps = sorted(stopped.frame["step"].unique())
    assert steps == list(range(len(steps))) and len(steps) >= 20
    # "failed" is not done: a rerun of the grid redoes it, as after a SIGKILL (tested above)


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_more_signals_during_the_shutdown_print_no_traceback(tmp_path, first):
    """A second (third, ...) Ctrl-C while the run flushes, closes and the interpreter exits is ignored."""
    out = tmp_path / "run"
    proc = _start(["run", *ARGS, "--out", str(out)])
    try:
        _wait_for("stats/chunk-000001.parquet", out, proc)
        proc.send_signal(first)
        sent = 1
        time.sleep(0.02)  # let the first be handled first (signals pending together run in number order)
        while proc.poll() is None and sent < 2000:  # keep pressing Ctrl-C until the process is gone
            try:
                proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                break
            sent += 1
            time.sleep(0.001)
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
    finally:
        _kill(proc)
    assert sent > 2, "the process exited before a second signal could be sent"
    assert code == (130 if first == signal.SIGINT else 143)
    assert "Traceback" not in err and "Exception ignored" not in err and "KeyboardInterrupt" not in err
    assert len(err.strip().splitlines()) == 2  # the announcement and one line
    stopped = load_run(out)
    assert stopped.status == "failed" and not stopped.writer_alive
    steps = sorted(stopped.frame["step"].unique())
    assert steps == list(range(len(steps))) and len(steps) >= 20


# -- a full disk ------------------------------------------------------------------------------------
# ``varprobe run`` whose os.fsync fails with ENOSPC after $VARPROBE_TEST_FSYNC_OK calls (a disk that
# fills up: every later write of a chunk or of meta.json fails).
_FULL_DISK_CLI = """
import errno, os, sys
ok, fsync = int(os.environ["VARPROBE_TEST_FSYNC_OK"]), os.fsync
calls = 0
def full(fd):
    global calls
    calls += 1
    if calls > ok:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return fsync(fd)
os.fsync = full
from varprobe.cli.main import main
sys.exit(main())
"""


def _run_full_disk(argv: list[str], ok_calls: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _FULL_DISK_CLI, *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO),
                                            "VARPROBE_TEST_FSYNC_OK": str(ok_calls)})


def _one_error_line(err: str, out: Path) -> str:
    assert "Traceback" not in err and "During handling" not in err and "Exception ignored" not in err
    announce, line = err.strip().splitlines()
    assert announce.startswith("varprobe run: ")
    assert line.startswith("varprobe run: error: ") and str(out) in line and "No space left on device" in line
    return line


def test_disk_full_mid_run_is_one_line_and_keeps_the_chunks_written(tmp_path):
    """os.fsync monkeypatched to raise ENOSPC (portable; a real tmpfs is the next test)."""
    out = tmp_path / "run"
    proc = _run_full_disk(["run", *ARGS, "--steps", "100", "--out", str(out)], ok_calls=12)
    assert proc.returncode == 1
    _one_error_line(proc.stderr, out)
    chunks = len(list((out / "stats").glob("chunk-*.parquet")))
    assert chunks >= 1
    full = load_run(out)  # meta.json cannot be rewritten either: it says "running", read as interrupted
    assert full.status == "interrupted" and not full.writer_alive
    assert sorted(full.frame["step"].unique()) == list(range(10 * chunks))  # every written chunk intact


def test_disk_full_at_start_is_one_line(tmp_path):
    out = tmp_path / "run"
    proc = _run_full_disk(["run", *ARGS, "--steps", "5", "--out", str(out)], ok_calls=0)
    assert proc.returncode == 1
    _one_error_line(proc.stderr, out)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 64 KiB tmpfs (needs root and a kernel that allows the mount; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); the monkeypatched "
                    "ENOSPC tests cover the same path")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_on_a_real_tmpfs_is_one_line_and_marks_the_run_failed(tiny_tmpfs):
    out = tiny_tmpfs / "run"
    proc = subprocess.run([sys.executable, "-m", "varprobe.cli", "run", *ARGS, "--steps", "100", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    _one_error_line(proc.stderr, out)
    full = load_run(out)  # the failed chunk's temp file is removed, so meta.json fits again
    assert full.status == "failed" and full.meta["error"]["type"] == "RunWriteError" and not full.writer_alive
    chunks = full.meta["chunks"]
    assert chunks >= 1 and sorted(full.frame["step"].unique()) == list(range(10 * chunks))
