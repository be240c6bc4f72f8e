"""overwrite=True replaces only a varprobe run, deletes only what the run format owns, and a
reader racing the replacement never sees a mix of two runs or an intact chunk called corrupt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from varprobe.record import RunWriter, load_run
from varprobe.record.meta import FORMAT_VERSION

REPO = Path(__file__).resolve().parents[2]
COLS = ["step", "layer", "depth", "mode", "module_type", "role", "quantity", "value"]


def frame(value: float, rows: int = 50, step0: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"step": np.arange(step0, step0 + rows), "layer": "conv", "depth": 0, "mode": "train",
                         "module_type": "Conv2d", "role": "conv", "quantity": "out.var",
                         "value": np.full(rows, value)})


def write_run(path: Path, chunks: int = 2, value: float = 1.0, **kw) -> None:
    with RunWriter(path, {"v": value}, **kw) as w:
        for i in range(chunks):
            w.append(frame(value, step0=50 * i))  # one row per step across the chunks


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (links not followed) with its content or link target."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = ("link:" + os.readlink(p) if p.is_symlink() else
                        "dir" if p.is_dir() else p.read_bytes())
    return out


def user_project(d: Path) -> None:  # the case of issue 11: no meta.json, but a stats/ folder
    (d / "src").mkdir(parents=True)
    (d / "stats").mkdir()
    (d / "notes.txt").write_text("notes")
    (d / "src" / "main.py").write_text("print('hi')")
    (d / "stats" / "results.csv").write_text("a,b\n1,2\n")


def foreign_json(d: Path) -> None:
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"name": "my package", "version": "1.0"}))
    (d / "data.bin").write_bytes(b"\0" * 10)


def newer_format(d: Path) -> None:
    write_run(d)
    meta = json.loads((d / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (d / "meta.json").write_text(json.dumps(meta))


def bad_schema(d: Path) -> None:
    write_run(d)
    meta = json.loads((d / "meta.json").read_text())
    meta["config"] = [1, 2]
    (d / "meta.json").write_text(json.dumps(meta))


def run_with_file_in_stats(d: Path) -> None:
    write_run(d)
    (d / "stats" / "results.csv").write_text("mine")


def run_with_top_level_files(d: Path) -> None:
    write_run(d)
    (d / "analysis").mkdir()
    (d / "analysis" / "fig.png").write_bytes(b"png")
    (d / "notes.txt").write_text("mine")


def run_with_symlinked_chunk(d: Path) -> None:
    write_run(d)
    (d.parent / "elsewhere.parquet").write_bytes(b"user data")
    (d / "stats" / "chunk-000005.parquet").symlink_to(d.parent / "elsewhere.parquet")


def symlink_to_run(d: Path) -> None:
    write_run(d.parent / "real")
    d.symlink_to(d.parent / "real")


def symlink_to_user_dir(d: Path) -> None:
    user_project(d.parent / "home")
    d.symlink_to(d.parent / "home")


def regular_file(d: Path) -> None:
    d.write_text("a file")


REFUSED = {  # case -> what the one-line message must say
    "user_project": (user_project, r"is not a varprobe run directory \(no meta.json\)"),
    "foreign_json": (foreign_json, r"not a varprobe run.*field 'format' must be 'varprobe-run'"),
    "newer_format": (newer_format, rf"format_version' is {FORMAT_VERSION + 1}, newer"),
    "bad_schema": (bad_schema, r"field 'config' must be an object"),
    "file_in_stats": (run_with_file_in_stats, r"holds files that are not part of a varprobe run "
                                              r"\(stats/results.csv\)"),
    "top_level_files": (run_with_top_level_files, r"\(analysis/, notes.txt\)"),
    "symlinked_chunk": (run_with_symlinked_chunk, r"stats/chunk-000005.parquet \(symlink\)"),
    "symlink_to_run": (symlink_to_run, r"it is a symlink"),
    "symlink_to_user_dir": (symlink_to_user_dir, r"it is a symlink"),
    "regular_file": (regular_file, r"exists and is not a directory; refusing to replace"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_overwrite_refuses_anything_but_a_run_and_deletes_nothing(tmp_path, case):
    make, why = REFUSED[case]
    target = tmp_path / "target"
    make(target)
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=why) as exc:
        RunWriter(target, {"new": 1}, overwrite=True)
    message = str(exc.value)
    assert "\n" not in message and str(target) in message
    assert snapshot(tmp_path) == before  # not one byte changed, no .lock added


def test_overwrite_deletes_only_the_run_formats_files(tmp_path):
    run = tmp_path / "r"
    write_run(run, chunks=3)
    (run / "model.pt").write_bytes(b"weights")  # written beside a run by experiment.run
    (run / "stats" / ".chunk-000003.parquet.123.tmp").write_bytes(b"half")  # a killed write
    (run / ".meta.json.x1.tmp").write_text("{")
    old_lock = (run / ".lock").stat().st_ino
    with RunWriter(run, {"v": 2.0}, overwrite=True) as w:
        assert sorted(p.name for p in run.iterdir()) == [".lock", "meta.json", "stats"]
        assert list((run / "stats").iterdir()) == []
        w.append(frame(2.0))
    assert (run / ".lock").stat().st_ino == old_lock  # the lock file is never unlinked
    again = load_run(run)
    assert again.config == {"v": 2.0} and again.frame.value.eq(2.0).all() and not again.damaged


def test_overwrite_accepts_a_writer_killed_while_starting(tmp_path):
    leftover = tmp_path / "r"  # only the lock and an empty stats/: nothing to delete
    (leftover / "stats").mkdir(parents=True)
    (leftover / ".lock").write_bytes(b"")
    write_run(leftover, chunks=1, overwrite=True)
    assert load_run(leftover).status == "finished"


def test_probe_save_and_probe_overwrite_refuse_a_user_directory(tmp_path):
    from varprobe.probe import Probe

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    proj = tmp_path / "proj"
    user_project(proj)
    before = snapshot(tmp_path)
    probe = Probe(model)
    with probe:
        loss = model(torch.randn(4, 3, 8, 8)).square().mean()
        loss.backward()
        probe.step(loss=loss)
    with pytest.raises(FileExistsError, match=rf"{proj} is not empty and is not a varprobe run"):
        probe.save(proj, overwrite=True)
    with pytest.raises(FileExistsError, match=rf"{proj} is not empty and is not a varprobe run"):
        Probe(model, out=proj, overwrite=True).attach()
    assert snapshot(tmp_path) == before


def test_cli_run_overwrite_refuses_a_user_directory(tmp_path):
    proj = tmp_path / "proj"
    user_project(proj)
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "varprobe.cli", "run", "--steps", "1",
                           "--batch-size", "16", "--threads", "1", "--overwrite", "--out", str(proj)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{proj} is not empty and is not a varprobe run" in proc.stderr.strip().splitlines()[-1]
    assert snapshot(tmp_path) == before


# -- a reader racing a replacement -----------------------------------------------------------

READER = textwrap.dedent("""
    import json, sys, time
    from varprobe.record import load_run
    run, seconds = sys.argv[1], float(sys.argv[2])
    end = time.monotonic() + seconds
    reads = errors = 0
    while time.monotonic() < end:
        try:
            r = load_run(run)
        except Exception as exc:
            errors += 1
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        reads += 1
        values = sorted(set(r.frame.value.tolist()))
        print(json.dumps({"config": r.config["v"], "values": values, "rows": len(r.frame),
                          "chunks": len(r.frame) // 50, "skipped": len(r.skipped)}), flush=True)
    print(json.dumps({"done": reads, "errors": errors}), flush=True)
""")


def test_reader_racing_overwrites_sees_one_whole_run_at_a_time(tmp_path):
    run = tmp_path / "r"
    write_run(run, chunks=8, value=0.0)
    script = tmp_path / "reader.py"
    script.write_text(READER)
    log = tmp_path / "reads.jsonl"  # a file, not a pipe: the reader never blocks on output
    with open(log, "w") as out:
        reader = subprocess.Popen([sys.executable, str(script), str(run), "3"], stdout=out,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            generation = 0
            while reader.poll() is None:
                generation += 1
                write_run(run, chunks=8, value=float(generation), overwrite=True)
            _, err = reader.communicate(timeout=30)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.communicate()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and "done" in lines[-1], err
    errors = [x["error"] for x in lines if "error" in x]
    assert errors == []
    reads = [x for x in lines if "config" in x]
    assert lines[-1]["done"] == len(reads) > 10 and generation > 3
    for r in reads:  # every read is of one generation: its meta.json and only its chunks
        assert r["skipped"] == 0 and r["values"] in ([], [r["config"]])


# -- a replacement cut short (issue 22, bug 3) ---------------------------------------------------

KILL_AFTER_UNLINKS = textwrap.dedent("""
    import os, pathlib, signal, sys
    from varprobe.record import RunWriter
    path, allowed = sys.argv[1], int(sys.argv[2])
    calls, unlink = 0, pathlib.Path.unlink
    def dying_unlink(self, missing_ok=False):
        global calls
        calls += 1
        if calls > allowed:
            os.kill(os.getpid(), signal.SIGKILL)
        unlink(self, missing_ok=missing_ok)
    pathlib.Path.unlink = dying_unlink
    RunWriter(path, {"v": -1.0}, overwrite=True)
""")


def kill_a_replacement(run_dir: Path, allowed_unlinks: int) -> None:
    """Start ``RunWriter(run_dir, overwrite=True)`` in a process SIGKILLed at its deletion number
    ``allowed_unlinks + 1`` (deterministic: the kill comes from inside, at that file)."""
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_UNLINKS, str(run_dir), str(allowed_unlinks)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == -9, proc.stderr


@pytest.mark.parametrize("allowed", [1, 2, 41])
def test_a_replacement_killed_part_way_is_finished_by_the_same_call(tmp_path, allowed):
    """Killed once meta.json went (1), after one chunk (2), half way (40 of 80 chunks): the
    directory still says it is a run being replaced; the reader names it, and the same
    ``overwrite=True`` replaces it with nothing of the old run left (was: "no meta.json", refused
    forever)."""
    run_dir = tmp_path / "run"
    write_run(run_dir, chunks=80, value=1.0)
    kill_a_replacement(run_dir, allowed)
    assert (run_dir / ".replacing").is_file() and not (run_dir / "meta.json").exists()
    left = sorted(p.name for p in (run_dir / "stats").iterdir())
    assert len(left) == 80 - (allowed - 1)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_run(run_dir)
    with pytest.raises(FileExistsError, match="already exists"):
        RunWriter(run_dir, {"v": 2.0})  # without overwrite: refused as before

    write_run(run_dir, chunks=2, value=2.0, overwrite=True)
    redone = load_run(run_dir)
    assert redone.config == {"v": 2.0} and len(redone.frame) == 100
    assert set(redone.frame.value) == {2.0} and redone.problems == []
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "meta.json", "stats"]


def test_a_replacement_killed_before_it_deletes_anything_leaves_the_old_run(tmp_path):
    """Killed before its mark is written: the old run, byte for byte. Killed after the mark, before
    meta.json goes: the old run still loads whole, and the next replacement takes it."""
    run_dir = tmp_path / "run"
    write_run(run_dir, chunks=3, value=1.0)
    before = snapshot(run_dir)
    kill_a_replacement(run_dir, 0)
    assert (run_dir / ".replacing").is_file()
    assert load_run(run_dir).config == {"v": 1.0} and load_run(run_dir).problems == []
    write_run(run_dir, chunks=1, value=2.0, overwrite=True)
    assert load_run(run_dir).config == {"v": 2.0} and not (run_dir / ".replacing").exists()

    write_run(run_dir, chunks=3, value=1.0, overwrite=True)
    before = snapshot(run_dir)
    script = KILL_AFTER_UNLINKS.replace("pathlib.Path.unlink = dying_unlink",
                                        "import varprobe.record.replace as r\n"
                                        "r.atomic_write = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", script, str(run_dir), "0"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == -9, proc.stderr
    without_lock = lambda snap: {k: v for k, v in snap.items() if k != ".lock"}  # noqa: E731 (holder's pid)
    assert without_lock(snapshot(run_dir)) == without_lock(before)
    assert load_run(run_dir).config == {"v": 1.0}


def test_a_symlinked_meta_json_is_named_as_a_symlink(tmp_path):
    run_dir, other = tmp_path / "run", tmp_path / "other"
    write_run(other)
    write_run(run_dir)
    (run_dir / "meta.json").unlink()
    (run_dir / "meta.json").symlink_to(other / "meta.json")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=r"meta.json is a symlink \(to .*other/meta.json\)"):
        RunWriter(run_dir, overwrite=True)
    assert snapshot(tmp_path) == before
