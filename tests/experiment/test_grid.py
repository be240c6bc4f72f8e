"""grid(): duplicates, empty axes, damaged runs redone, runs held by another live process skipped,
failures that never stop a grid, parallel workers (loky and a real Dask cluster) that are
bit-identical to a serial grid, a SIGKILLed worker's run redone; RunConfig.device."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from varprobe.cli import main
from varprobe.experiment import RunConfig, grid, run
from varprobe.experiment.device import check_device, resolve_device
from varprobe.experiment.grid import default_threads, grid_configs
from varprobe.experiment.runner import load_model, run_name
from varprobe.record import load_run
from varprobe.record.meta import read_meta

from tests.cli.test_cli import _exit_code, _lines
from tests.experiment.test_faults import _wait_for
from tests.record.test_replace import kill_a_replacement

REPO = Path(__file__).resolve().parents[2]
BASE = RunConfig(model="simple_cnn", scheme="pws", data="digits", batch_size=32, steps=4, threads=1,
                 flush_every=1)

# --quiet: no progress bar and no closing hint, so that stderr holds the grid's report alone
CLI_TINY = ["--steps", "4", "--batch-size", "32", "--threads", "1", "--flush-every", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)




def _snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (the lock file aside)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "varprobe.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


# -- which configs --------------------------------------------------------------------------------------
def test_duplicate_configs_are_dropped_by_value_and_counted(tmp_path, capsys):
    configs, dropped = grid_configs(BASE, seeds=[0, 0], lrs=[0.1, 0.10, 1e-1])
    assert configs == [BASE.replace(lr=0.1)] and dropped == 5
    assert main(["grid", *CLI_TINY, "--seeds", "0,0", "--lrs", "0.1,0.10,1e-1", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert len(_lines(out)) == 2  # the header and one run
    assert _lines(err) == ["grid: dropped 5 duplicate config(s)"]
    assert [p.name for p in tmp_path.iterdir()] == [run_name(RunConfig(lr=0.1, batch_size=32, steps=4, threads=1,
                                                                       flush_every=1))]


@pytest.mark.parametrize("option", ["--seeds", "--lrs", "--schemes", "--batch-sizes"])
def test_an_empty_axis_is_refused(tmp_path, capsys, option):
    assert _exit_code(["grid", *CLI_TINY, option, "", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and _lines(err)[-1].startswith("varprobe grid: error: ")
    assert f"argument {option}: '' is empty" in err
    assert not (tmp_path / "g").exists()
    with pytest.raises(ValueError, match="seed values are empty"):
        grid(BASE, tmp_path / "h", seeds=[], progress=False)


# -- damaged runs (issue 11, bug 9) ---------------------------------------------------------------------
def _truncate_chunk(path: Path) -> None:
    chunk = path / "stats" / "chunk-000001.parquet"
    chunk.write_bytes(chunk.read_bytes()[:40])


def _delete_chunk(path: Path) -> None:
    (path / "stats" / "chunk-000002.parquet").unlink()


def _kill_a_replacement(path: Path) -> None:  # issue 22, bug 3: was "damaged ... not replaced" forever
    kill_a_replacement(path, 2)


@pytest.mark.parametrize("damage,named", [(_truncate_chunk, "chunk-000001.parquet"),
                                          (_delete_chunk, "chunk-000002.parquet"),
                                          (_kill_a_replacement, "a replacement of")])
def test_a_damaged_run_is_reported_in_one_line_and_redone(tmp_path, capsys, damage, named):
    argv = ["grid", *CLI_TINY, "--seeds", "0,1", "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    good, bad = (tmp_path / run_name(BASE.replace(seed=s, scheme=RunConfig().scheme)) for s in (0, 1))
    original, untouched = load_run(bad).frame, _snapshot(good)
    damage(bad)
    with pytest.raises((ValueError, FileNotFoundError)):  # a damaged chunk, or no meta.json
        load_run(bad)

    assert main(argv) == 0  # was: a ValueError traceback
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    (line,) = _lines(err)
    assert line.startswith(f"grid: run {bad} is damaged (") and named in line and line.endswith("redoing it")
    redone = load_run(bad)
    assert redone.status == "finished"
    pd.testing.assert_frame_equal(redone.frame, original, check_exact=True)  # same config: same records
    assert _snapshot(good) == untouched  # the other run is not touched
    assert len(_lines(out)) == 3


def test_a_run_with_unreadable_meta_is_reported_and_left_alone(tmp_path, capsys):
    """Corrupt meta.json: the directory cannot be shown to be a varprobe run, so the grid does not
    replace it (RunWriter would refuse too); it names it in one line and exits 1, the directory is
    byte-identical and the other run is untouched."""
    argv = ["grid", *CLI_TINY, "--seeds", "0,1", "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    good, bad = (tmp_path / run_name(BASE.replace(seed=s, scheme=RunConfig().scheme)) for s in (0, 1))
    untouched = _snapshot(good)
    (bad / "meta.json").write_text('{"format": "varprobe-run", "status": "fini')
    damaged = _snapshot(bad)

    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = _lines(err)
    assert code == 1 and _snapshot(bad) == damaged and _snapshot(good) == untouched
    assert len(lines) == 1 and lines[0].startswith(f"grid: {bad.name}: error: {bad} is damaged (corrupt "), lines


def test_a_foreign_directory_in_a_runs_place_is_not_touched(tmp_path, capsys):
    target = tmp_path / run_name(BASE.replace(scheme=RunConfig().scheme))
    (target / "src").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    (target / "src" / "main.py").write_text("print(1)")
    before = _snapshot(target)
    assert main(["grid", *CLI_TINY, "--seeds", "0,1", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and _snapshot(target) == before
    assert f"grid: {target.name}: error: {target} is not empty and is not a varprobe run directory" in err
    assert load_run(tmp_path / run_name(BASE.replace(scheme=RunConfig().scheme, seed=1))).status == "finished"


# -- runs held elsewhere; failures --------------------------------------------------------------------
def test_a_run_held_by_another_process_is_skipped_and_the_grid_goes_on(tmp_path, capsys):
    """A real second process writes seed 0's run; the grid skips it, runs seed 1, reports the skip
    (exit 0: nothing failed); once the other process is killed, the next grid redoes seed 0."""
    long = ["--steps", "120", "--batch-size", "32", "--threads", "1", "--flush-every", "5"]
    held = tmp_path / run_name(RunConfig(steps=120, batch_size=32, threads=1, flush_every=5))
    other = _start(["run", *long, "--out", str(held)])
    try:
        _wait_for("stats/chunk-000000.parquet", held, other)
        argv = ["grid", *long, "--no-progress", "--seeds", "0,1", "--out", str(tmp_path)]
        result = grid(RunConfig(steps=120, batch_size=32, threads=1, flush_every=5), tmp_path, seeds=[0, 1],
                      progress=False)
        assert result.held == [held.name] and result.ok
        assert [o["status"] for o in result.outcomes] == ["held", "finished"]
        assert f"pid {other.pid}" in result.outcomes[0]["message"]
        assert any(line.startswith("grid: skipped 1 run(s) held by another live process: " + held.name)
                   for line in result.report())
        assert read_meta(held)["host"]["pid"] == other.pid  # still the other process's run
    finally:
        other.kill()
        other.wait(timeout=30)
        other.stdout.close(), other.stderr.close()
    killed = load_run(held).status  # "finished" where the other process got there before the kill
    assert killed in ("interrupted", "finished")
    assert main(argv) == 0  # the next invocation redoes a killed run, and skips a finished one
    capsys.readouterr()
    assert load_run(held).status == "finished"
    assert (read_meta(held)["host"]["pid"] == os.getpid()) == (killed == "interrupted")


def test_a_run_claimed_by_another_grids_worker_is_skipped(tmp_path):
    """The claim a grid's worker takes on a run directory (an flock on the directory) keeps a
    second grid off it, even before the run's own lock exists."""
    target = tmp_path / run_name(BASE.replace(scheme=RunConfig().scheme))
    target.mkdir()
    fd = os.open(target, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what another grid's worker holds while it runs the config
    try:
        result = grid(BASE.replace(scheme=RunConfig().scheme), tmp_path, seeds=[0, 1], progress=False)
    finally:
        os.close(fd)
    assert [o["status"] for o in result.outcomes] == ["held", "finished"]
    assert result.outcomes[0]["message"] == "claimed by another grid's worker"
    assert list(target.iterdir()) == []  # nothing written into the claimed directory


def test_a_run_that_fails_or_collapses_never_stops_the_grid(tmp_path):
    """gn with width 3 fails (GroupNorm: 3 channels in 8 groups), plain at lr 50 collapses, pws
    finishes; the failure is named in one line and in the exit status."""
    base = BASE.replace(width=3, lr=50.0, steps=20, scheme="plain")
    result = grid(base, tmp_path, schemes=["gn", "plain"], progress=False)
    gn, plain = result.outcomes
    assert gn["status"] == "failed" and gn["message"].startswith("ValueError: ") and "3" in gn["message"]
    assert plain["status"] == "collapsed" and plain["message"].startswith("collapsed at step")
    assert result.failed == [gn["name"]] and not result.ok
    assert [r.config["scheme"] for r in result] == ["plain"]  # the failed config left no directory
    assert not (tmp_path / gn["name"]).exists()
    # The CLI builds every config once before the first run starts, so there the same grid is a
    # usage error and nothing runs.
    code = _exit_code(["grid", "--schemes", "gn,pws", "--width", "3", "--steps", "2", "--batch-size", "32",
                       "--threads", "1", "--no-progress", "--out", str(tmp_path / "cli")])
    assert code == 2 and not (tmp_path / "cli").exists()


# -- parallel grids ---------------------------------------------------------------------------------
def _state(run_) -> dict[str, torch.Tensor]:
    return load_model(run_).state_dict()


def test_jobs_1_jobs_2_and_a_dask_cluster_give_bit_identical_runs(tmp_path):
    distributed = pytest.importorskip("distributed")
    seeds = [0, 1]
    serial = grid(BASE, tmp_path / "serial", seeds=seeds, progress=False)
    loky = grid(BASE, tmp_path / "loky", seeds=seeds, jobs=2, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        dask = grid(BASE, tmp_path / "dask", seeds=seeds, jobs=None, backend="dask",
                    scheduler=cluster.scheduler_address, progress=False)
    pids = {"serial": set(), "loky": set(), "dask": set()}
    for label, runs in (("serial", serial), ("loky", loky), ("dask", dask)):
        assert [r.status for r in runs] == ["finished", "finished"] and runs.ok
        assert [r.config["seed"] for r in runs] == seeds
        pids[label] = {r.meta["host"]["pid"] for r in runs}
        for r, reference in zip(runs, serial):
            assert r.meta["threads"] == 1 and r.meta["device"] == "cpu"
            pd.testing.assert_frame_equal(r.frame, reference.frame, check_exact=True)
            assert r.meta["result"] == reference.meta["result"]
            state, ref = _state(r), _state(reference)
            assert list(state) == list(ref) and all(torch.equal(state[k], ref[k]) for k in state)
    assert pids["serial"] == {os.getpid()}
    assert os.getpid() not in pids["loky"] | pids["dask"]  # worker processes ran them


def test_parallel_workers_pin_threads_to_cores_over_jobs(tmp_path):
    result = grid(BASE.replace(threads=None), tmp_path, seeds=[0, 1], jobs=2, progress=False)
    assert [r.meta["threads"] for r in result] == [default_threads(2)] * 2
    assert default_threads(2) >= 1
    assert all(RunConfig.from_dict(r.config).threads is None for r in result)  # the name does not change


def test_a_sigkilled_worker_leaves_its_run_interrupted_and_the_next_grid_redoes_it(tmp_path):
    argv = ["grid", "--steps", "100", "--batch-size", "32", "--threads", "1", "--flush-every", "5",
            "--no-progress", "--jobs", "2", "--seeds", "0,1", "--out", str(tmp_path)]
    proc = _start(argv)
    try:
        chunk = _wait_for("*/stats/chunk-000001.parquet", tmp_path, proc)
        victim = chunk.parent.parent
        worker = read_meta(victim)["host"]["pid"]
        assert worker != proc.pid
        os.kill(worker, signal.SIGKILL)  # a real kill of the worker process, mid-run
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert f"grid: {victim.name}: interrupted: its worker process died" in err
    assert load_run(victim).status == "interrupted"
    names = [run_name(RunConfig(steps=100, batch_size=32, threads=1, flush_every=5, seed=s)) for s in (0, 1)]
    others = [n for n in names if n != victim.name]
    assert len(others) == 1
    # Runs the broken pool was running besides are interrupted too; the rest ran in a fresh pool.
    assert all(load_run(tmp_path / n).status in ("finished", "interrupted") for n in others)
    serial = [a for a in argv if a not in ("--jobs", "2")]  # the resume rule does not depend on jobs
    assert main(serial) == 0
    assert [load_run(tmp_path / n).status for n in names] == ["finished"] * 2


# -- bad input for the parallel options -----------------------------------------------------------------
@pytest.mark.parametrize("extra,named", [
    (["--jobs", "0"], ["--jobs", "'0'", "positive integer"]),
    (["--jobs", "-2"], ["--jobs", "'-2'", "positive integer"]),
    (["--backend", "ray"], ["--backend", "'ray'", "loky, dask"]),
    (["--scheduler", "tcp://127.0.0.1:1"], ["--scheduler", "'tcp://127.0.0.1:1'", "--backend dask"]),
    (["--backend", "dask"], ["--backend dask", "--scheduler"]),
    (["--backend", "dask", "--scheduler", "tcp://127.0.0.1:1"], ["'tcp://127.0.0.1:1'", "cannot reach"]),
    (["--device", "gpu"], ["--device", "'gpu'", "auto, cpu, cuda, cuda:N"]),
])
def test_bad_parallel_options_are_one_line_and_start_nothing(tmp_path, capsys, extra, named):
    if "dask" in extra and "--scheduler" in extra:
        pytest.importorskip("distributed")
    out = tmp_path / "g"
    start = time.monotonic()
    assert _exit_code(["grid", *CLI_TINY, *extra, "--out", str(out)]) == 2
    assert time.monotonic() - start < 30  # an unreachable scheduler fails fast
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = _lines(err)[-1]
    assert last.startswith("varprobe grid: error: ") and all(n in last for n in named), last
    assert not out.exists()


@pytest.mark.parametrize("bad", [dict(jobs=0), dict(jobs=-1), dict(jobs=1.5), dict(backend="ray"),
                                 dict(scheduler="tcp://x:1"), dict(backend="dask")])
def test_bad_parallel_arguments_in_python(tmp_path, bad):
    with pytest.raises(ValueError, match="jobs|backend|scheduler"):
        grid(BASE, tmp_path / "g", progress=False, **bad)
    assert not (tmp_path / "g").exists()


# -- devices ----------------------------------------------------------------------------------------
def test_device_is_validated_and_recorded(tmp_path):
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "", 0):
        with pytest.raises(ValueError, match="valid: auto, cpu, cuda, cuda:N"):
            RunConfig(device=bad)
        with pytest.raises(ValueError):
            check_device(bad)
    assert RunConfig().device == "auto"
    r = run(BASE.replace(device="cpu"), tmp_path / "cpu")
    assert r.meta["device"] == "cpu" and r.meta["threads"] == 1
    assert r.meta["determinism"]["device_type"] == "cpu" and "thread count" in r.meta["determinism"]["bitwise"]
    auto = run(BASE, tmp_path / "auto")  # auto: CUDA where available, else the CPU
    assert auto.meta["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"device '{device}' requested but CUDA is not available"):
            resolve_device(device)
        assert _exit_code(["run", *CLI_TINY[:-1], "--device", device, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "CUDA is not available" in _lines(err)[-1]
        assert not (tmp_path / "r").exists()
    assert resolve_device("auto") == torch.device("cpu")


def test_worker_k_uses_gpu_k_mod_n(monkeypatch):
    """The mapping itself, on a machine that says it has 3 GPUs (no GPU is touched)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [resolve_device("cuda", k) for k in range(5)] == [torch.device("cuda", k % 3) for k in range(5)]
    assert [resolve_device("auto", k).index for k in range(4)] == [0, 1, 2, 0]
    assert resolve_device("cuda:2", 1) == torch.device("cuda", 2) and resolve_device("cpu", 1).type == "cpu"
    with pytest.raises(ValueError, match="'cuda:3': only 3 GPU"):
        resolve_device("cuda:3")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_a_cuda_run_is_on_the_gpu_deterministic_and_says_so(tmp_path):
    config = BASE.replace(device="cuda", model="resnet8", size=8, width=4, scheme="bn")
    a, b = run(config, tmp_path / "a"), run(config, tmp_path / "b")
    assert a.meta["device"] == b.meta["device"] == "cuda:0"
    det = a.meta["determinism"]
    assert det["device_type"] == "cuda" and det["deterministic_algorithms"] is True and det["tf32"] is False
    assert torch.are_deterministic_algorithms_enabled()
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
    state, other = _state(a), _state(b)
    assert all(torch.equal(state[k], other[k]) for k in state)
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["device"] == "cuda:0"
