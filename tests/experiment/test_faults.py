"""Faults injected for real into training runs: a SIGKILLed process, a second process on the same
run directory, activations that overflow. What each test guarantees is listed in the README's
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


def _wait_for(path_glob: str, root: Path, proc: subprocess.Popen, timeout: float = 60.0) -> Path:
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
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        err = proc.stderr.read()
    finally:
        _kill(proc)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "varprobe run: interrupted"
    stopped = load_run(out)
    assert stopped.status == "failed" and stopped.meta["error"]["type"] == "KeyboardInterrupt"
    assert not stopped.writer_alive  # the lock is released
    recorded = sorted(stopped.frame["step"].unique())
    assert recorded == list(range(len(recorded))) and len(recorded) >= 20  # flushed at exit too
