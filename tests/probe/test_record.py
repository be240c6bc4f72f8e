"""Probe output: in-memory table, streaming to a run directory, save, and collapse marking."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from varprobe.probe import Probe
from varprobe.record import load_run, load_runs

from .nets import Chain


def _train(model, probe, steps, loss_value=None):
    for s in range(steps):
        g = torch.Generator().manual_seed(s)
        x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        probe.step(loss=loss if loss_value is None else loss_value, lr=0.1)
        model.zero_grad()


def test_streaming_flushes_every_n_recorded_steps(tmp_path):
    model = Chain()
    out = tmp_path / "run"
    probe = Probe(model, every=2, out=out, flush_every=2, meta={"scheme": "bn", "seed": 3})
    with probe:
        _train(model, probe, 5)  # records steps 0, 2, 4
        mid = load_run(out)  # readable while being written: steps 0 and 2 were flushed
        assert mid.meta["status"] == "running"
        assert set(mid.frame.step) == {0, 2}
    run = load_run(out)
    assert run.meta["status"] == "finished"
    assert set(run.frame.step) == {0, 2, 4}
    assert run.meta["config"]["scheme"] == "bn" and run.meta["config"]["probe"]["every"] == "Every(2)"
    pd.testing.assert_frame_equal(probe.frame(), run.frame)
    both = load_runs([out])
    assert {"run", "status", "scheme", "seed"} <= set(both.columns)


def test_body_exception_marks_run_failed_and_keeps_flushed_steps(tmp_path):
    model = Chain()
    out = tmp_path / "run"
    with pytest.raises(KeyError):
        with Probe(model, out=out, flush_every=1) as probe:
            _train(model, probe, 2)
            raise KeyError("stop")
    run = load_run(out)
    assert run.meta["status"] == "failed" and run.meta["error"]["type"] == "KeyError"
    assert set(run.frame.step) == {0, 1}


def test_save_and_frame_without_out(tmp_path):
    model = Chain()
    probe = Probe(model, meta={"lr": 0.1})
    with probe:
        _train(model, probe, 3)
    frame = probe.frame()
    assert list(frame.columns) == ["step", "layer", "depth", "mode", "module_type", "role", "quantity", "value"]
    probe.save(tmp_path / "saved")
    run = load_run(tmp_path / "saved")
    pd.testing.assert_frame_equal(run.frame, frame)
    assert run.meta["status"] == "finished" and run.meta["config"]["lr"] == 0.1
    with pytest.raises(FileExistsError):
        probe.save(tmp_path / "saved")
    probe.save(tmp_path / "saved", overwrite=True)


def test_nonfinite_loss_marks_run_collapsed(tmp_path):
    model = Chain()
    out = tmp_path / "run"
    with Probe(model, out=out) as probe:
        _train(model, probe, 2, loss_value=float("inf"))
    run = load_run(out)
    assert run.meta["status"] == "collapsed" and run.meta["collapsed_step"] == 0
    loss = run.frame[run.frame.quantity == "loss"].value
    assert len(loss) == 2 and not loss.map(lambda v: v < float("inf")).any()


def test_memory_does_not_grow_with_batch_size():
    sizes = {}
    for batch in (2, 16):
        model = Chain()
        probe = Probe(model)
        with probe:
            for s in range(2):
                x = torch.randn(batch, 3, 8, 8)
                F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
                probe.step()
            sizes[batch] = probe.nbytes
    assert sizes[2] == sizes[16] > 0


def test_extra_sinks_receive_every_flushed_table(tmp_path):
    model = Chain()
    got = []
    with Probe(model, out=tmp_path / "run", flush_every=1, sinks=[got.append]) as probe:
        _train(model, probe, 2)
    run = load_run(tmp_path / "run")
    pd.testing.assert_frame_equal(pd.concat(got, ignore_index=True), run.frame)
    mem = []
    probe = Probe(model, flush_every=1, sinks=[mem.append])  # without out: the sink and frame()
    with probe:
        _train(model, probe, 1)
    assert len(mem) == 1 and len(mem[0]) == len(probe.frame())


def test_a_raising_sink_is_named_and_the_run_directory_keeps_its_data(tmp_path):
    from varprobe.probe.sink import SinkError

    def broken(frame):
        raise OSError("dashboard unreachable")

    model = Chain()
    out = tmp_path / "run"
    with pytest.raises(SinkError, match=r"sink .*broken.* raised OSError: dashboard unreachable"):
        with Probe(model, out=out, flush_every=1, sinks=[broken]) as probe:
            _train(model, probe, 3)
    run = load_run(out)
    assert run.meta["status"] == "failed" and run.meta["error"]["type"] == "SinkError"
    assert set(run.frame.step) == {0}  # written before the sink raised at the first flush
    with pytest.raises(TypeError, match="sinks entries must be callables"):
        Probe(model, sinks=["nope"])


def test_flushes_of_one_layout_give_frames_that_do_not_share_writes():
    """Flushes of the same layouts reuse their string columns; a sink that edits its table in place
    changes neither the next flush's table, nor another sink's, nor the probe's own."""
    model = Chain()
    got, other = [], []
    with Probe(model, flush_every=1, sinks=[got.append, other.append]) as probe:
        _train(model, probe, 3)
    assert len(got) == 3 and got[1]["layer"].tolist() == got[2]["layer"].tolist()
    want = got[2].copy()
    got[1].loc[:, "layer"] = "edited"
    got[1].loc[:, "quantity"] = "edited"
    pd.testing.assert_frame_equal(got[2], want)
    assert other[1]["layer"].tolist() == want["layer"].tolist()
    assert "edited" not in set(probe.frame()["layer"]) | set(probe.frame()["quantity"])
