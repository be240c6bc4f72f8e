"""The "file" lock method (``.lock.owner`` created with O_CREAT | O_EXCL), and varprobe without fcntl.

Processes are real: holders are subprocesses, killed with SIGKILL; "without fcntl" is a subprocess
whose ``sys.modules["fcntl"]`` is None before varprobe is imported (as on Windows)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from varprobe.record import RunLockedError, RunWriter, load_run
from varprobe.record.lock import LOCK_ENV, RunLock, lock_method, writer_alive

NO_FCNTL = "import sys; sys.modules['fcntl'] = None\n"
ROOT = Path(__file__).resolve().parents[2]


def _frame(step: int) -> pd.DataFrame:
    return pd.DataFrame({"step": [step], "layer": ["conv"], "depth": [1], "mode": ["train"],
                         "module_type": ["Conv2d"], "role": ["conv"], "quantity": ["out.var"], "value": [float(step)]})


def _python(code: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _holder(run: Path, prelude: str = "", env: dict | None = None) -> subprocess.Popen:
    """A process that opens a RunWriter on ``run``, says "ready" and waits to be killed."""
    proc = _python(prelude + f"""
import time
from varprobe.record import RunWriter
w = RunWriter({str(run)!r}, {{"who": "holder"}})
print("ready", flush=True)
time.sleep(60)
""", env)
    line = proc.stdout.readline().strip()
    assert line == "ready", proc.stderr.read()
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


def test_import_varprobe_and_load_run_work_without_fcntl(tmp_path):
    run = tmp_path / "written-with-flock"
    with RunWriter(run, {"lr": 0.1}) as w:
        w.append(_frame(0))
        w.append(_frame(1))
    proc = _python(NO_FCNTL + f"""
import json, varprobe
from varprobe.record import RunWriter, load_run
from varprobe.record.lock import lock_method
r = varprobe.load_run({str(run)!r})
with RunWriter({str(tmp_path / "written-without-fcntl")!r}, {{"lr": 0.2}}) as w:
    w.append(r.frame.drop(columns=[c for c in r.frame.columns if c not in {list(_frame(0).columns)!r}]))
print(json.dumps([lock_method(), r.status, r.frame["value"].tolist(), r.writer_alive]))
""")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out) == ["file", "finished", [0.0, 1.0], False]
    other = load_run(tmp_path / "written-without-fcntl")
    assert other.status == "finished" and other.frame["value"].tolist() == [0.0, 1.0]
    assert not (tmp_path / "written-without-fcntl" / ".lock.owner").exists()  # released: removed


@pytest.mark.parametrize("prelude, env", [(NO_FCNTL, {}), ("", {LOCK_ENV: "file"})], ids=["no-fcntl", "env"])
def test_a_second_process_is_refused_and_a_killed_holders_lock_is_broken(tmp_path, monkeypatch, prelude, env):
    run = tmp_path / "run"
    holder = _holder(run, prelude, env)
    try:
        owner = json.loads((run / ".lock.owner").read_text())
        assert owner["pid"] == holder.pid and owner["hostname"] == socket.gethostname()
        assert writer_alive(run) is True
        for method in ("file", "flock"):  # refused by both methods, naming the holder's pid
            with pytest.raises(RunLockedError, match=rf"pid {holder.pid} on host"):
                RunLock(run, method).acquire()
        monkeypatch.setenv(LOCK_ENV, "file")
        with pytest.raises(RunLockedError, match=str(holder.pid)):
            RunWriter(run, overwrite=True)
        assert json.loads((run / ".lock.owner").read_text()) == owner  # the holder's lock untouched
    finally:
        _kill(holder)
    assert writer_alive(run) is False  # a dead pid on this host: stale
    assert load_run(run).status == "interrupted"
    with RunWriter(run, {"who": "next"}, overwrite=True) as w:  # breaks the stale lock
        assert json.loads((run / ".lock.owner").read_text())["pid"] == os.getpid()
        w.append(_frame(0))
    assert sorted(p.name for p in run.iterdir()) == [".lock", "meta.json", "stats"]


COUNTER = """
import sys, time
from varprobe.record import RunLockedError
from varprobe.record.lock import RunLock
run, counter, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = 0
while done < n:
    lock = RunLock(run, "file")
    try:
        lock.acquire()
    except RunLockedError:
        time.sleep(0.001)
        continue
    value = int(open(counter).read())   # read, wait, write: loses updates unless exclusive
    time.sleep(0.002)
    open(counter, "w").write(str(value + 1))
    lock.release()
    done += 1
"""


def test_file_lock_excludes_two_processes_for_real(tmp_path):
    """Two processes each add 1 to a counter file 40 times under the lock, with a pause between
    the read and the write: without mutual exclusion updates are lost."""
    run, counter = tmp_path / "run", tmp_path / "counter"
    run.mkdir()
    counter.write_text("0")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER, str(run), str(counter), "40"], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert int(counter.read_text()) == 80
    assert not (run / ".lock.owner").exists()


def test_a_lock_of_another_host_is_never_broken(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    owner = run / ".lock.owner"
    content = json.dumps({"pid": 4194303, "hostname": "other-host.example", "nonce": "n"})
    owner.write_text(content)
    with pytest.raises(RunLockedError) as info:
        RunLock(run, "file").acquire()
    message = str(info.value)
    assert "pid 4194303 on host other-host.example" in message and "another host" in message
    assert str(owner) in message and len(message.splitlines()) == 1
    assert owner.read_text() == content
    assert writer_alive(run) is None  # cannot be told from here
    owner.unlink()  # what the message asks for, once that process is known to be gone
    lock = RunLock(run, "file")
    lock.acquire()
    lock.release()


def test_a_flock_holder_refuses_a_file_writer(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run, "", {LOCK_ENV: "flock"})
    try:
        assert not (run / ".lock.owner").exists()
        with pytest.raises(RunLockedError, match=rf"pid {holder.pid}"):
            RunLock(run, "file").acquire()
        assert not (run / ".lock.owner").exists()  # the refused writer took nothing
    finally:
        _kill(holder)
    lock = RunLock(run, "file")
    lock.acquire()
    lock.release()


def test_bad_lock_method_is_one_line(monkeypatch):
    monkeypatch.setenv(LOCK_ENV, "nfs")
    with pytest.raises(ValueError, match=r"unknown lock method 'nfs' \(VARPROBE_LOCK\); valid: flock, file"):
        lock_method()
    monkeypatch.delenv(LOCK_ENV)
    assert lock_method() == "flock" and lock_method("file") == "file"


class _FakeKernel32:
    """OpenProcess / GetExitCodeProcess / GetLastError / CloseHandle of a table of processes."""

    def __init__(self, procs: dict[int, int], denied: set[int] = frozenset()):
        self.procs, self.denied, self.closed, self.error = procs, denied, [], 0

    def OpenProcess(self, access, inherit, pid):
        if pid in self.denied:
            self.error = 5
            return 0
        if pid not in self.procs:
            self.error = 87  # ERROR_INVALID_PARAMETER
            return 0
        return 1000 + pid

    def GetLastError(self):
        return self.error

    def GetExitCodeProcess(self, handle, code_ref):
        code_ref._obj.value = self.procs[handle - 1000]
        return 1

    def CloseHandle(self, handle):
        self.closed.append(handle)


def test_windows_pid_check_asks_the_kernel_and_never_signals(monkeypatch):
    from varprobe.record import owner_file

    k = _FakeKernel32({10: 259, 11: 0}, denied={12})  # 10 running, 11 exited, 12 another user's
    assert owner_file._windows_pid_exists(k, 10) is True
    assert owner_file._windows_pid_exists(k, 11) is False
    assert owner_file._windows_pid_exists(k, 12) is True
    assert owner_file._windows_pid_exists(k, 13) is False
    assert k.closed == [1010, 1011]  # every handle opened is closed

    def no_kill(*args):
        raise AssertionError("os.kill(pid, 0) is CTRL_C_EVENT on Windows")
    monkeypatch.setattr(owner_file.os, "name", "nt")
    monkeypatch.setattr(owner_file.os, "kill", no_kill)
    import ctypes
    monkeypatch.setattr(ctypes, "windll", type("W", (), {"kernel32": k})(), raising=False)
    assert owner_file.pid_exists(10) is True and owner_file.pid_exists(11) is False
