"""load_run / load_runs: round trip, live reads, killed writers, corrupt chunks, globbing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from varprobe.record import Run, RunWriter, check_run, load_run, load_runs
from varprobe.record.lock import RunLockedError

REPO = Path(__file__).resolve().parents[2]
COLS = ["step", "layer", "depth", "mode", "module_type", "role", "quantity", "value"]


def make_frame(step0: int = 0, steps: int = 2, layers: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + step0)
    rows = []
    for s in range(step0, step0 + steps):
        for d in range(layers):
            for q in ("out.var", "out.mean", "grad_out.var"):
                rows.append((s, f"block{d}.conv", d, "train", "Conv2d", "conv", q, rng.standard_normal()))
            rows.append((s, f"block{d}.conv", d, "eval", "Conv2d", "conv", "out.var", rng.random()))
        rows.append((s, "", -1, "train", "", "", "loss", rng.random()))
    return pd.DataFrame(rows, columns=COLS)


def write_run(path: Path, config: dict | None = None, chunks: int = 3) -> pd.DataFrame:
    frames = [make_frame(2 * i) for i in range(chunks)]
    with RunWriter(path, config) as w:
        for f in frames:
            w.append(f)
    return pd.concat(frames, ignore_index=True)


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


# -- round trip ---------------------------------------------------------------------------

def test_round_trip_values_and_dtypes_exact(tmp_path):
    special = make_frame(100, steps=1)
    special["value"] = [np.nan, np.inf, -np.inf, -0.0, 5e-324, np.nextafter(1.0, 2.0),
                        1 / 3, np.finfo(np.float64).max, np.pi, 1e-300, 2.0**60, -1.5,
                        7.0][: len(special)]
    frames = [make_frame(0), make_frame(2, layers=5), special, make_frame(4, steps=4)]
    with RunWriter(tmp_path / "r", {"scheme": "bn"}) as w:
        for f in frames:
            w.append(f)
    run = load_run(tmp_path / "r")
    expected = pd.concat(frames, ignore_index=True)
    assert isinstance(run, Run) and run.status == "finished" and not run.interrupted
    assert list(run.frame.columns) == COLS
    assert run.frame.step.dtype == np.int64 and run.frame.depth.dtype == np.int64
    assert run.frame.value.dtype == np.float64
    pd.testing.assert_frame_equal(run.frame, expected, check_exact=True)
    # bit for bit, NaN and -0.0 included
    assert np.array_equal(run.frame.value.to_numpy().view(np.int64),
                          expected.value.to_numpy().view(np.int64))
    assert run.config == {"scheme": "bn"} and run.skipped == []


def test_run_without_chunks_has_typed_empty_frame(tmp_path):
    RunWriter(tmp_path / "r").close()
    frame = load_run(tmp_path / "r").frame
    assert frame.empty and list(frame.columns) == COLS
    assert frame.step.dtype == np.int64 and frame.value.dtype == np.float64
    pd.testing.assert_series_equal(frame.dtypes, make_frame().dtypes)


def test_read_while_writer_is_open(tmp_path):
    run = tmp_path / "r"
    w = RunWriter(run, {"lr": 0.1})
    assert load_run(run).frame.empty
    written = []
    for i in range(3):
        written.append(make_frame(2 * i))
        w.append(written[-1])
        live = load_run(run)
        assert live.meta["status"] == "running" and live.status == "running"
        assert live.writer_alive is True and not live.interrupted
        pd.testing.assert_frame_equal(live.frame, pd.concat(written, ignore_index=True))
    w.close()
    done = load_run(run)
    assert done.status == "finished" and done.writer_alive is False


# -- killed writers -----------------------------------------------------------------------

SLEEPING_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np, pandas as pd
    from varprobe.record import RunWriter
    w = RunWriter(sys.argv[1], {"scheme": "pws", "seed": 3})
    for i in range(3):
        w.append(pd.DataFrame({"step": [i, i], "layer": ["conv1", ""], "depth": [0, -1],
                               "mode": "train", "module_type": ["Conv2d", ""], "role": ["conv", ""],
                               "quantity": ["out.var", "loss"], "value": [i + 0.25, i / 3]}))
    print("flushed", flush=True)
    time.sleep(60)   # "training" that never ends
""")


def test_sigkill_mid_run_keeps_flushed_chunks_and_frees_the_lock(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(SLEEPING_WRITER)
    run = tmp_path / "runs" / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert proc.stdout.readline().strip() == "flushed", proc.communicate(timeout=10)[1]
        live = load_run(run)  # another process reads it while it is alive
        assert live.writer_alive is True and live.status == "running" and len(live.frame) == 6
        with pytest.raises(RunLockedError, match=rf"{run} is already being written.*pid {proc.pid}"):
            RunWriter(run, overwrite=True)  # a second writer in this process is refused
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes the pipes

    dead = load_run(run)
    assert dead.meta["status"] == "running" and dead.meta["end_time"] is None
    assert dead.writer_alive is False and dead.interrupted and dead.status == "interrupted"
    assert dead.frame.step.tolist() == [0, 0, 1, 1, 2, 2]
    assert dead.frame.value.tolist() == [0.25, 0.0, 1.25, 1 / 3, 2.25, 2 / 3]
    table = load_runs(tmp_path / "runs" / "*")
    assert set(table.status) == {"interrupted"} and set(table.scheme) == {"pws"}

    with pytest.raises(FileExistsError):  # a rerun must opt in to replacing it ...
        RunWriter(run)
    with RunWriter(run, {"scheme": "pws", "seed": 3}, overwrite=True) as w:  # ... and is not blocked
        w.append(make_frame())
    rerun = load_run(run)
    assert rerun.status == "finished" and len(rerun.frame) == len(make_frame())


APPENDING_WRITER = textwrap.dedent("""
    import sys
    import numpy as np, pandas as pd
    from varprobe.record import RunWriter
    n = 20000
    layers = [f"conv{j}" for j in range(n)]  # one row per (step, mode, layer, quantity)
    w = RunWriter(sys.argv[1])
    i = 0
    while True:
        w.append(pd.DataFrame({"step": np.full(n, i), "layer": layers, "depth": np.arange(n),
                               "mode": "train", "module_type": "Conv2d", "role": "conv", "quantity": "out.var",
                               "value": np.arange(n) + i * 0.5}))
        i += 1
        print(i, flush=True)
""")


def test_sigkill_during_appends_never_exposes_a_partial_chunk(tmp_path):
    script = tmp_path / "appender.py"
    script.write_text(APPENDING_WRITER)
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        for _ in range(4):  # let it get going, then kill it at an arbitrary point
            assert proc.stdout.readline().strip(), proc.communicate(timeout=10)[1]
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes the pipes
    run_ = load_run(run)
    chunks = sorted(p.name for p in (run / "stats").glob("chunk-*.parquet"))
    assert len(chunks) >= 4 and run_.meta["chunks"] in (len(chunks), len(chunks) - 1)
    assert run_.interrupted and run_.skipped == []
    assert len(run_.frame) == 20000 * len(chunks)
    assert run_.frame.groupby("step").size().eq(20000).all()
    assert run_.frame.step.is_monotonic_increasing


def test_temp_files_are_ignored(tmp_path):
    expected = write_run(tmp_path / "r")
    (tmp_path / "r" / "stats" / ".chunk-000003.parquet.999.tmp").write_bytes(b"PAR1 half")
    (tmp_path / "r" / ".meta.json.abc.tmp").write_text("{ half")
    pd.testing.assert_frame_equal(load_run(tmp_path / "r").frame, expected)


# -- corrupt chunks -----------------------------------------------------------------------

def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _scribble(p: Path) -> None:  # overwrite bytes in the middle of the data, keep the size
    data = bytearray(p.read_bytes())
    mid = len(data) // 3
    data[mid: mid + 64] = os.urandom(64)
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_truncate, _empty, _scribble])
def test_corrupt_chunk_is_named_or_skipped(tmp_path, corrupt):
    run = tmp_path / "r"
    frames = [make_frame(2 * i, layers=20) for i in range(3)]
    with RunWriter(run) as w:
        paths = [w.append(f) for f in frames]
    corrupt(paths[1])
    with pytest.raises(ValueError, match=rf"corrupt or truncated chunk {paths[1]}"):
        load_run(run)
    with pytest.warns(RuntimeWarning, match=rf"skipped 1 .*{paths[1]}"):
        partial = load_run(run, skip_corrupt=True)
    assert partial.skipped == [paths[1]]
    pd.testing.assert_frame_equal(partial.frame, pd.concat([frames[0], frames[2]],
                                                           ignore_index=True))


def test_missing_chunk_is_reported(tmp_path):
    run = tmp_path / "r"
    write_run(run, chunks=3)
    gone = run / "stats" / "chunk-000001.parquet"
    gone.unlink()
    with pytest.raises(ValueError, match=rf"missing 1 chunk\(s\): {gone}"):
        load_run(run)
    with pytest.warns(RuntimeWarning, match="chunk-000001"):
        assert load_run(run, skip_corrupt=True).skipped == [gone]
    last = run / "stats" / "chunk-000002.parquet"  # a trailing chunk that meta.json counts
    last.unlink()
    with pytest.raises(ValueError, match="missing 2 chunk"):
        load_run(run)


def test_missing_directory_or_meta_and_corrupt_meta(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"run directory not found: {tmp_path / 'nope'}"):
        load_run(tmp_path / "nope")
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'bare' / 'meta.json'} not found"):
        load_run(tmp_path / "bare")
    write_run(tmp_path / "r", chunks=1)
    (tmp_path / "r" / "meta.json").write_text('{"status": "runn')
    with pytest.raises(ValueError, match=rf"corrupt {tmp_path / 'r' / 'meta.json'}"):
        load_run(tmp_path / "r")


# -- load_runs ----------------------------------------------------------------------------

def test_load_runs_glob_adds_run_status_and_config_columns(tmp_path):
    runs = tmp_path / "runs"
    configs = {"bn-s0": {"scheme": "bn", "lr": 0.1, "batch_size": 128, "seed": 0},
               "pws-s0": {"scheme": "pws", "lr": 0.4, "batch_size": 128, "seed": 0,
                          "opt": {"momentum": 0.9}, "widths": [16, 32]},
               "pws-s1": {"scheme": "pws", "lr": 0.4, "batch_size": 128, "seed": 1,
                          "step": 99}}
    sizes = {}
    for name, cfg in configs.items():
        sizes[name] = len(write_run(runs / name, cfg, chunks=2))
    (runs / "plots").mkdir()  # not a run: ignored by the glob
    table = load_runs(str(runs / "*"))
    assert table.columns[0] == "run"
    assert table.run.unique().tolist() == ["bn-s0", "pws-s0", "pws-s1"]  # sorted
    assert table.groupby("run", sort=False).size().to_dict() == sizes
    assert {"scheme", "lr", "batch_size", "seed", "status", "opt.momentum",
            "config.step"} <= set(table.columns)
    assert "widths" not in table.columns
    per_run = table.groupby("run").first()
    assert per_run.scheme.to_dict() == {"bn-s0": "bn", "pws-s0": "pws", "pws-s1": "pws"}
    assert per_run.seed.to_dict() == {"bn-s0": 0, "pws-s0": 0, "pws-s1": 1}
    assert per_run.lr.to_dict() == {"bn-s0": 0.1, "pws-s0": 0.4, "pws-s1": 0.4}
    assert set(table.status) == {"finished"}
    assert table.step.dtype == np.int64 and table.value.dtype == np.float64
    assert table.loc[table.run == "pws-s1", "config.step"].eq(99).all()
    # same result from an explicit list and from Path objects
    listed = load_runs([runs / "bn-s0", str(runs / "pws-s0"), runs / "pws-s1"])
    pd.testing.assert_frame_equal(listed, table)


def test_load_runs_disambiguates_equal_names(tmp_path):
    write_run(tmp_path / "a" / "seed0", {"scheme": "bn"}, chunks=1)
    write_run(tmp_path / "b" / "seed0", {"scheme": "ws"}, chunks=1)
    table = load_runs(str(tmp_path / "*" / "seed0"))
    assert table.run.unique().tolist() == ["a/seed0", "b/seed0"]
    twice = load_runs([tmp_path / "a" / "seed0"] * 2)
    assert twice.run.unique().tolist() == ["seed0#1", "seed0#2"]


def test_load_runs_errors(tmp_path):
    pattern = str(tmp_path / "runs" / "*")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no run directories match '{pattern}'")):
        load_runs(pattern)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_runs(tmp_path / "nope")
    (tmp_path / "runs" / "plots").mkdir(parents=True)  # matches, but is not a run
    with pytest.raises(FileNotFoundError, match="1 path.*matched, none containing meta.json"):
        load_runs(pattern)
    with pytest.raises(ValueError, match="no run paths given"):
        load_runs([])


# -- damaged runs and aliases ---------------------------------------------------------------------

def test_run_whose_only_chunk_is_corrupt_is_returned_damaged_not_dropped(tmp_path):
    runs = tmp_path / "runs"
    good = write_run(runs / "good", {"seed": 0}, chunks=2)
    write_run(runs / "bad", {"seed": 1}, chunks=1)
    _truncate(runs / "bad" / "stats" / "chunk-000000.parquet")
    with pytest.warns(RuntimeWarning, match="skipped 1 missing or corrupt"):
        bad = load_run(runs / "bad", skip_corrupt=True)
    assert bad.damaged and bad.frame.empty and list(bad.frame.columns) == COLS
    assert bad.skipped == [runs / "bad" / "stats" / "chunk-000000.parquet"]
    assert len(bad.problems) == 1 and bad.problems[0].startswith(
        f"corrupt or truncated chunk {runs / 'bad' / 'stats' / 'chunk-000000.parquet'}")
    assert "damaged" in repr(bad) and not load_run(runs / "good").damaged

    with pytest.warns(RuntimeWarning) as record:
        table = load_runs(str(runs / "*"), skip_corrupt=True)
    assert [str(w.message).split(":")[0] for w in record] == [
        f"load_run({str(runs / 'bad')!r})", f"load_runs"]
    assert str(record[1].message).startswith(
        f"load_runs: run bad ({runs / 'bad'}) is damaged and has no readable rows (corrupt or "
        "truncated chunk")
    assert table.run.unique().tolist() == ["good"] and len(table) == len(good)
    listing = table.attrs["runs"]
    assert list(listing) == ["bad", "good"]  # nothing vanishes: the damaged run is listed
    assert listing["bad"]["damaged"] and listing["bad"]["rows"] == 0
    assert listing["bad"]["problems"] == bad.problems and listing["bad"]["status"] == "finished"
    assert listing["good"] == {"path": str(runs / "good"), "status": "finished",
                               "rows": len(good), "damaged": False, "problems": []}
    with pytest.raises(ValueError, match="corrupt or truncated chunk"):
        load_runs(str(runs / "*"))  # without skip_corrupt: refused, naming the file


def test_check_run_lists_problems_without_raising(tmp_path):
    run = tmp_path / "r"
    write_run(run, chunks=4)
    assert check_run(run) == []
    (run / "stats" / "chunk-000001.parquet").unlink()
    _scribble(run / "stats" / "chunk-000002.parquet")
    problems = check_run(run)
    assert len(problems) == 2
    assert problems[0] == (f"1 chunk(s) missing: {run / 'stats' / 'chunk-000001.parquet'} "
                           "(meta.json counts 4 chunks, 3 on disk)")
    assert problems[1].startswith(f"corrupt or truncated chunk {run / 'stats' / 'chunk-000002.parquet'}")
    assert check_run(tmp_path / "nope") == [f"run directory not found: {tmp_path / 'nope'}"]
    (run / "meta.json").write_text("{")
    assert check_run(run)[0].startswith(f"corrupt {run / 'meta.json'}")


def test_same_run_through_a_symlink_is_loaded_once(tmp_path):
    runs = tmp_path / "runs"
    frame = write_run(runs / "a-run", {"seed": 0}, chunks=1)
    write_run(runs / "b-run", {"seed": 1}, chunks=1)
    (runs / "latest").symlink_to(runs / "b-run")  # sorts after b-run: b-run keeps its name
    (runs / "0-first").symlink_to("a-run")  # sorts first: its name is kept, a-run is the alias
    with pytest.warns(RuntimeWarning) as record:
        table = load_runs(str(runs / "*"))
    messages = [str(w.message) for w in record]
    assert table.run.unique().tolist() == ["0-first", "b-run"]
    assert len(table) == 2 * len(frame) and list(table.attrs["runs"]) == ["0-first", "b-run"]
    assert any(f"{runs / 'a-run'} is the same run as {runs / '0-first'}" in m for m in messages)
    assert any(f"{runs / 'latest'} is the same run as {runs / 'b-run'}" in m for m in messages)
    with pytest.warns(RuntimeWarning, match=f"{runs / 'latest'} is the same run as {runs / 'b-run'}"):
        two = load_runs([runs / "b-run", runs / "latest"])  # an explicit list: the same
    assert two.run.unique().tolist() == ["b-run"] and len(two) == len(frame)


def _format1_run(path: Path, frame: pd.DataFrame) -> None:
    """A run as format 1 wrote it: chunks without the role column, meta.json format_version 1."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    with RunWriter(path, {"seed": 0}) as w:
        w.append(frame.assign(role="conv"))
    chunk = path / "stats" / "chunk-000000.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), chunk)
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 1
    (path / "meta.json").write_text(json.dumps(meta))


def test_format1_run_reads_with_role_from_an_exact_type_table(tmp_path):
    types = ["Conv2d", "ConvTranspose2d", "ConvNextLayerNorm", "LayerNorm", "MultiheadAttention", "ResidualBlock",
             "MyConv2dThing", ""]
    layers = [f"l{i}" for i in range(len(types) - 1)] + [""]
    quantities = ["out.var"] * 5 + ["branch.out.var", "out.var", "loss"]
    old = pd.DataFrame({"step": 0, "layer": layers, "depth": 0, "mode": "train", "module_type": types,
                        "quantity": quantities, "value": 1.0})
    _format1_run(tmp_path / "old", old)
    run = load_run(tmp_path / "old")
    assert list(run.frame.columns) == ["step", "layer", "depth", "mode", "module_type", "role", "quantity", "value"]
    # exact names only: ConvNextLayerNorm is not a conv, nor a norm; a made-up type is "other"
    assert list(run.frame["role"]) == ["conv", "conv_transpose", "other", "norm", "attention", "block", "other", ""]
    both = load_runs([tmp_path / "old"])
    assert list(both["role"]) == list(run.frame["role"])
