"""Failures in and around a Probe: attach is all or nothing; inference_mode forwards; any failure
inside the probe (hook, step, flush, close) reaches the user unchanged, marks the run failed and
releases its lock."""
from __future__ import annotations

import errno
import json

import pytest
import torch
import torch.nn.functional as F

import varprobe.probe.hooks as hooks_module
import varprobe.probe.params as params_module
from varprobe.probe import Probe
from varprobe.record import RunLockedError, RunWriter, load_run

from .nets import Chain, clone, expected_eval, make_net

F64 = torch.float64


def _data(n=4, seed=0, shape=(3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 3, (n,), generator=g)


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def _status(path) -> dict:
    return json.loads((path / "meta.json").read_text())


def _train_step(model, probe, seed=0):
    x, y = _data(seed=seed)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    probe.step(loss=loss, lr=0.1)
    model.zero_grad()


# -- attach is all or nothing ------------------------------------------------------------------------
def _fail_writer(model, tmp_path, monkeypatch, keep):
    return Probe(model, out="/proc/nope/run")  # the run directory cannot be created


def _fail_locked(model, tmp_path, monkeypatch, keep):
    keep.append(RunWriter(tmp_path / "held"))  # a live writer holds the directory
    return Probe(model, out=tmp_path / "held")


def _fail_hook_registration(model, tmp_path, monkeypatch, keep):
    def boom(*args, **kwargs):
        raise RuntimeError("hook registration failed")
    monkeypatch.setattr(model.conv2, "register_forward_hook", boom)  # after conv1's and norm's hooks
    return Probe(model)


@pytest.mark.parametrize("make,error", [(_fail_writer, OSError), (_fail_locked, RunLockedError),
                                        (_fail_hook_registration, RuntimeError)])
def test_failed_attach_leaves_no_hook_and_a_second_probe_works(tmp_path, monkeypatch, make, error):
    model = Chain()
    keep: list = []
    probe = make(model, tmp_path, monkeypatch, keep)
    with pytest.raises(error):
        with probe:
            pytest.fail("the body must not run")
    assert not probe.attached
    assert _hooks(model) == 0
    x, y = _data()
    F.cross_entropy(model(x), y).backward()  # a forward and backward touch nothing of the probe
    assert probe.nbytes == 0 and probe.frame().empty
    monkeypatch.undo()
    good = Probe(model, out=tmp_path / "good")
    with good:
        _train_step(model, good)
    run = load_run(tmp_path / "good")
    assert run.meta["status"] == "finished" and set(run.frame.step) == {0}
    assert _hooks(model) == 0


# -- inference_mode ------------------------------------------------------------------------------------
def test_inference_mode_forwards_are_recorded_as_eval():
    net = make_net(0)
    probe = Probe(net)
    x_out, _ = _data(5, 1, (3, 11, 9))
    x_out = x_out.to(F64)
    with probe:
        net.eval()
        with torch.inference_mode():  # first forward ever: buffers are allocated inside inference_mode
            net(x_out)                # a normal input tensor
            x_in = x_out.flip(0) * 0.5  # an inference tensor
            net(x_in)
        with torch.no_grad():
            net(x_out)
        expected = expected_eval(clone(net).eval(), [x_out, x_in.clone(), x_out])
        net.train()
        x, y = _data(3, 2, (3, 11, 9))
        F.cross_entropy(net(x.to(F64)), torch.randint(0, 4, (3,))).backward()
        probe.step()
    f = probe.frame()
    ev = {(r.layer, r.quantity): r.value for r in f[f["mode"] == "eval"].itertuples()}
    assert set(ev) == set(expected)
    bad = [(k, ev[k], v) for k, v in expected.items() if not abs(ev[k] - v) <= 1e-9 * abs(v) + 1e-13]
    assert not bad, bad[:5]
    assert set(f[f["mode"] == "train"].step) == {0}


def test_inference_mode_in_a_run_finishes_it_and_frees_the_lock(tmp_path):
    model = Chain()
    x, _ = _data(2)
    with Probe(model, out=tmp_path / "r") as probe:
        _train_step(model, probe)
        model.eval()
        with torch.inference_mode():
            model(x)
        model.train()
    run = load_run(tmp_path / "r")
    assert run.meta["status"] == "finished"
    assert set(run.frame[run.frame["mode"] == "eval"].step) == {1}
    Probe(Chain(), out=tmp_path / "r", overwrite=True).attach().close()  # the lock is free


# -- any failure inside the probe -----------------------------------------------------------------------
class Injected(RuntimeError):
    pass


_RAISES = {"hook": Injected, "step": Injected, "flush": OSError, "close": OSError}


def _inject(monkeypatch, where):
    if where == "hook":  # the reduction of an activation, in a forward hook
        real = hooks_module.channel_sum_norm
        calls = {"n": 0}

        def flaky(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > 8:  # after the first step
                raise Injected("injected hook failure")
            return real(*args, **kwargs)
        monkeypatch.setattr(hooks_module, "channel_sum_norm", flaky)
    elif where == "step":  # the weight statistics read in step()
        def broken(*args, **kwargs):
            raise Injected("injected step failure")
        monkeypatch.setattr(params_module, "grad_shift_many", broken)
    else:  # disk full while writing a chunk: in a flush during step(), or in close()
        def full(self, frame):
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        monkeypatch.setattr(RunWriter, "append", full)


@pytest.mark.parametrize("where", ["hook", "step", "flush", "close"])
def test_failure_inside_the_probe_reaches_the_user_marks_failed_and_frees_the_lock(tmp_path, monkeypatch, where):
    model = Chain()
    out = tmp_path / "r"
    with pytest.raises(_RAISES[where], match="injected") as info:
        with Probe(model, out=out, flush_every=1 if where != "close" else 100) as probe:
            _train_step(model, probe, 0)  # step 0 is flushed (flush_every=1) before any fault
            _inject(monkeypatch, where)
            for s in range(1, 3):
                _train_step(model, probe, s)
    assert type(info.value) is _RAISES[where]  # the original error, not one raised on the way out
    meta = _status(out)
    assert meta["status"] == "failed"
    assert meta["error"]["type"] == _RAISES[where].__name__ and "injected" in meta["error"]["message"]
    assert _hooks(model) == 0
    monkeypatch.undo()
    if where != "close":
        assert set(load_run(out).frame.step) >= {0}  # what was flushed before the fault is intact
    again = Probe(model, out=out, overwrite=True)  # same process: not RunLockedError
    with again:
        _train_step(model, again)
    assert load_run(out).meta["status"] == "finished"


def test_close_with_a_bad_status_marks_failed_and_frees_the_lock(tmp_path):
    model = Chain()
    probe = Probe(model, out=tmp_path / "r").attach()
    _train_step(model, probe)
    with pytest.raises(ValueError, match="status must be a non-empty string"):
        probe.close(status="")
    assert _status(tmp_path / "r")["status"] == "failed"
    probe.close()  # idempotent
    Probe(model, out=tmp_path / "r", overwrite=True).attach().close()
