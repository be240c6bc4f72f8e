"""WandbSink against a real offline W&B run (no network): the keys and steps that reach run.log,
and the offline run directory that finish() writes."""
from __future__ import annotations

import pytest

wandb = pytest.importorskip("wandb", reason="needs the wandb extra: pip install 'varprobe[wandb]'")

from varprobe.sinks import WandbSink  # noqa: E402

from .test_keys import assert_same, expected_scalars  # noqa: E402


@pytest.fixture
def offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = wandb.init(mode="offline", dir=str(tmp_path), project="varprobe-test",
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    logged: list[tuple[int, dict]] = []
    real_log = run.log

    def log(data, step=None, **kw):
        logged.append((step, dict(data)))
        return real_log(data, step=step, **kw)

    run.log = log
    yield run, logged
    if not run._is_finished:
        run.finish()


@pytest.mark.parametrize("per_layer", [False, True])
def test_keys_and_steps_reach_the_run(run_table, offline_run, tmp_path, per_layer):
    run, logged = offline_run
    sink = WandbSink(run, per_layer=per_layer)
    sink(run_table)
    sink.close()
    steps = [s for s, _ in logged]
    assert steps == sorted(set(run_table.loc[run_table["mode"] == "train", "step"].tolist()))
    got = {(s, k): v for s, d in logged for k, v in d.items()}
    assert_same(got, expected_scalars(run_table, per_layer))
    run.finish()
    dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(dirs) == 1 and list(dirs[0].glob("run-*.wandb"))


def test_active_run_is_used_when_run_is_none(run_table, offline_run):
    run, logged = offline_run
    WandbSink(quantities=["loss"])(run_table)
    assert logged and all(set(d) == {"varprobe/loss"} for _, d in logged)


def test_no_active_run_is_one_line(run_table, monkeypatch):
    monkeypatch.setattr(wandb, "run", None)
    with pytest.raises(RuntimeError, match="wandb.init"):
        WandbSink()(run_table)


def test_unknown_quantity_is_refused():
    with pytest.raises(ValueError, match="'gw.shfit_ratio'.*valid quantities"):
        WandbSink(quantities=["gw.shfit_ratio"])


def _probe(tmp_path, sink):
    import torch
    from torch import nn

    import varprobe
    model = nn.Sequential(nn.Linear(3, 3))
    return model, varprobe.Probe(model, out=tmp_path / "run", sinks=[sink], flush_every=1)


def test_a_finished_run_is_refused_when_the_probe_attaches(offline_run, tmp_path):
    """Before any training: one line naming the sink and the finished run; no hook is left on the
    model and no run directory is created."""
    from varprobe.probe.sink import SinkError
    run, logged = offline_run
    run.finish()
    model, probe = _probe(tmp_path, WandbSink(run))
    with pytest.raises(SinkError, match=rf"WandbSink\(run='{run.id}'\)\.open\(\).*'{run.id}' is finished") as err:
        probe.attach()
    assert "\n" not in str(err.value)
    assert not probe.attached and not model[0]._forward_hooks and not (tmp_path / "run").exists()
    assert logged == []


def test_no_active_run_is_refused_when_the_probe_attaches(tmp_path, monkeypatch):
    from varprobe.probe.sink import SinkError
    monkeypatch.setattr(wandb, "run", None)
    _, probe = _probe(tmp_path, WandbSink())
    with pytest.raises(SinkError, match=r"WandbSink\(run=None\)\.open\(\).*wandb.init"):
        probe.attach()
    assert not (tmp_path / "run").exists()


def test_an_active_run_is_accepted_and_gets_the_steps(offline_run, tmp_path):
    import torch
    run, logged = offline_run
    model, probe = _probe(tmp_path, WandbSink(run, quantities=["loss"]))
    with probe:
        for _ in range(2):
            loss = model(torch.randn(4, 3)).square().mean()
            loss.backward()
            probe.step(loss=loss)
    assert [s for s, _ in logged] == [0, 1]
