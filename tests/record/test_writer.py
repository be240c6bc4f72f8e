"""RunWriter: layout, meta.json, schema checks, atomicity, the single-writer lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from varprobe.record import RunWriter, load_run
from varprobe.record.lock import RunLockedError, writer_alive

REPO = Path(__file__).resolve().parents[2]


def make_frame(step0: int = 0, steps: int = 2, layers: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(step0, step0 + steps):
        for d in range(layers):
            for q in ("out.var", "out.mean"):
                rows.append((s, f"block{d}.conv", d, "train", "Conv2d", "conv", q, rng.standard_normal()))
        rows.append((s, "", -1, "train", "", "", "loss", rng.random()))
    return pd.DataFrame(rows, columns=["step", "layer", "depth", "mode", "module_type",
                                       "role", "quantity", "value"])


def strict_json(path: Path) -> dict:
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(path.read_text(), parse_constant=bad)


def test_layout_and_meta(tmp_path):
    run = tmp_path / "nested" / "r1"
    cfg = {"scheme": "pws", "lr": np.float32(0.5), "batch_size": np.int64(128), "seed": 0,
           "data": tmp_path / "cifar", "widths": (16, 32), "nan": float("nan")}
    w = RunWriter(run, cfg)
    meta = strict_json(run / "meta.json")
    assert (run / "stats").is_dir()
    assert meta["status"] == "running" and meta["end_time"] is None and meta["chunks"] == 0
    assert meta["config"] == {"scheme": "pws", "lr": 0.5, "batch_size": 128, "seed": 0,
                              "data": str(tmp_path / "cifar"), "widths": [16, 32], "nan": None}
    assert set(meta["versions"]) >= {"python", "torch", "numpy", "pandas", "pyarrow", "varprobe"}
    assert meta["versions"]["pandas"] == pd.__version__ and meta["versions"]["varprobe"]
    assert meta["host"]["pid"] == os.getpid() and meta["host"]["hostname"]
    for v in meta["host"].values():  # host info carries no filesystem path
        assert not (isinstance(v, str) and (os.sep in v or str(tmp_path) in v))
    assert meta["start_time"].endswith("+00:00")
    w.append(make_frame(0))
    w.append(make_frame(2))
    assert strict_json(run / "meta.json")["chunks"] == 2
    w.close()
    meta = strict_json(run / "meta.json")
    assert meta["status"] == "finished" and meta["end_time"] >= meta["start_time"]
    assert meta["chunks"] == 2 and meta["rows"] == 2 * len(make_frame())
    assert sorted(p.name for p in (run / "stats").iterdir()) == [
        "chunk-000000.parquet", "chunk-000001.parquet"]
    assert sorted(p.name for p in run.iterdir()) == [".lock", "meta.json", "stats"]


def test_append_returns_path_and_empty_frame_appends_nothing(tmp_path):
    with RunWriter(tmp_path / "r") as w:
        assert w.append(make_frame().iloc[:0]) is None
        assert w.append(pd.DataFrame()) is None
        p = w.append(make_frame())
        assert p == tmp_path / "r" / "stats" / "chunk-000000.parquet" and p.is_file()
        assert w.chunks == 1
    assert load_run(tmp_path / "r").meta["chunks"] == 1


@pytest.mark.parametrize("mutate, match", [
    (lambda f: f.drop(columns="depth"), r"missing columns \['depth'\]"),
    (lambda f: f.assign(extra=1), r"unexpected columns \['extra'\]"),
    (lambda f: f.assign(step=f.step + 0.5), r"'step' must have an integer dtype"),
    (lambda f: f.assign(layer=[None] + list(f.layer[1:])), r"'layer' has missing values"),
    (lambda f: f.assign(quantity=1), r"'quantity' must hold strings"),
    (lambda f: f.assign(value="x"), r"'value' must have a numeric dtype"),
])
def test_schema_is_enforced(tmp_path, mutate, match):
    with RunWriter(tmp_path / "r") as w:
        with pytest.raises(ValueError, match=match):
            w.append(mutate(make_frame()))
        assert w.chunks == 0
    assert list((tmp_path / "r" / "stats").iterdir()) == []


def test_accepts_categorical_and_object_strings_and_other_int_widths(tmp_path):
    f = make_frame()
    g = f.assign(layer=f.layer.astype("category"), quantity=f.quantity.astype(object),
                 step=f.step.astype(np.int32), value=f.value.astype(np.float32))
    with RunWriter(tmp_path / "r") as w:
        w.append(g)
    out = load_run(tmp_path / "r").frame
    pd.testing.assert_frame_equal(out, f.assign(value=f.value.astype(np.float32).astype(np.float64)))


def test_refuses_non_empty_directory_unless_overwrite(tmp_path):
    run = tmp_path / "r"
    with RunWriter(run) as w:
        w.append(make_frame())
    with pytest.raises(FileExistsError, match=rf"{run}.*not empty.*overwrite=True"):
        RunWriter(run)
    with RunWriter(run, {"seed": 1}, overwrite=True) as w:
        assert list((run / "stats").iterdir()) == []
    assert load_run(run).meta["config"] == {"seed": 1} and load_run(run).frame.empty
    # an empty existing directory is fine
    (tmp_path / "empty").mkdir()
    RunWriter(tmp_path / "empty").close()


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    d = tmp_path / "home"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match=rf"{d} is not empty and is not a varprobe run"):
        RunWriter(d, overwrite=True)
    assert (d / "thesis.tex").read_text() == "precious"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        RunWriter(f)


def test_config_must_be_json_serialisable(tmp_path):
    with pytest.raises(TypeError, match=r"config.model is not JSON-serialisable"):
        RunWriter(tmp_path / "r", {"model": object()})
    with pytest.raises(TypeError, match="must be a dict"):
        RunWriter(tmp_path / "r2", ["not", "a", "dict"])
    assert not (tmp_path / "r").exists()


def test_context_manager_marks_failure_and_releases_lock(tmp_path):
    run = tmp_path / "r"
    with pytest.raises(ZeroDivisionError):
        with RunWriter(run) as w:
            w.append(make_frame())
            1 / 0
    assert w.closed
    meta = strict_json(run / "meta.json")
    assert meta["status"] == "failed"
    assert meta["error"] == {"type": "ZeroDivisionError", "message": "division by zero"}
    assert writer_alive(run) is False
    RunWriter(run, overwrite=True).close()


def test_close_status_fields_and_idempotence(tmp_path):
    run = tmp_path / "r"
    w = RunWriter(run)
    w.append(make_frame())
    w.close("collapsed", collapsed_at_step=7)
    w.close("finished")  # no-op
    meta = strict_json(run / "meta.json")
    assert meta["status"] == "collapsed" and meta["collapsed_at_step"] == 7
    with pytest.raises(RuntimeError, match="closed"):
        w.append(make_frame())
    with pytest.raises(RuntimeError, match="closed"):
        w.update_meta(x=1)


def test_update_meta_rejects_managed_keys_and_bad_values(tmp_path):
    with RunWriter(tmp_path / "r") as w:
        with pytest.raises(ValueError, match=r"\['chunks', 'status'\] are maintained"):
            w.update_meta(status="done", chunks=3)
        with pytest.raises(TypeError, match=r"meta.obj is not JSON-serialisable"):
            w.update_meta(obj={1, 2})
        with pytest.raises(ValueError, match="non-empty string"):
            w.close(status="")
        w.update_meta(best_acc=np.float64(0.91), notes={"a": [1, 2]})
    meta = strict_json(tmp_path / "r" / "meta.json")
    assert meta["best_acc"] == 0.91 and meta["notes"] == {"a": [1, 2]}


def test_meta_json_is_replaced_atomically(tmp_path):
    run = tmp_path / "r"
    w = RunWriter(run, {"lr": 0.1})
    stop = threading.Event()
    seen, errors = [], []

    def reader():
        while not stop.is_set():
            try:
                m = strict_json(run / "meta.json")
                assert m["config"] == {"lr": 0.1} and m["status"] == "running"
                seen.append(m.get("i", -1))
            except Exception as exc:  # a torn or partial file would land here
                errors.append(repr(exc))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(120):
            w.update_meta(i=i, payload="x" * (i * 37 % 5000))  # size changes every write
    finally:
        stop.set()
        t.join()
    w.close()
    assert errors == [] and len(seen) > 0
    assert strict_json(run / "meta.json")["i"] == 119
    assert sorted(p.name for p in run.iterdir()) == [".lock", "meta.json", "stats"]


def test_second_writer_in_same_process_is_refused(tmp_path):
    run = tmp_path / "r"
    first = RunWriter(run)
    first.append(make_frame())
    for kwargs in ({}, {"overwrite": True}):
        with pytest.raises(RunLockedError, match=rf"{run} is already being written by another "
                                                  rf"RunWriter \(pid {os.getpid()} on host"):
            RunWriter(run, **kwargs)
    with pytest.raises(TypeError, match="takes a pandas DataFrame, got dict"):
        first.append({"step": [0]})
    first.append(make_frame(2))  # the first writer is unaffected
    first.close()
    assert load_run(run).meta["chunks"] == 2 and len(load_run(run).frame) == 2 * len(make_frame())
    RunWriter(run, overwrite=True).close()  # free again once closed


FORKING_WRITER = textwrap.dedent("""
    import os, sys, time
    from varprobe.record import RunWriter
    w = RunWriter(sys.argv[1])
    child = os.fork()
    if child == 0:           # e.g. a fork-started DataLoader worker that outlives its parent
        time.sleep(30)
        os._exit(0)
    print(child, flush=True)
    time.sleep(30)
""")


def test_forked_child_does_not_keep_a_killed_writers_lock(tmp_path):
    script = tmp_path / "fork_writer.py"
    script.write_text(FORKING_WRITER)
    run = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    child = None
    try:
        line = proc.stdout.readline()
        assert line.strip(), proc.communicate(timeout=10)[1]
        child = int(line)
        assert writer_alive(run) is True
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        os.kill(child, 0)  # the forked child is still alive ...
        assert writer_alive(run) is False  # ... but holds no lock
        RunWriter(run, overwrite=True).close()
    finally:
        for pid in (proc.pid, child):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.communicate(timeout=10)  # reaps it and closes the pipes
