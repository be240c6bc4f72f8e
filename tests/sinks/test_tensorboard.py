"""TensorBoardSink: scalars and hparams read back from the event files with EventAccumulator."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install 'varprobe[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

import varprobe  # noqa: E402
from varprobe.sinks import TensorBoardSink  # noqa: E402

from .test_keys import assert_same, expected_scalars  # noqa: E402


def read(log_dir):
    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return ea, {(e.step, tag): e.value for tag in ea.Tags()["scalars"] for e in ea.Scalars(tag)}


@pytest.mark.parametrize("per_layer", [False, True])
def test_scalars_read_back_equal_the_table(run_table, tmp_path, per_layer):
    sink = TensorBoardSink(tmp_path / "tb", per_layer=per_layer)
    half = run_table["step"] <= run_table["step"].min()
    sink(run_table[half])  # two flushes, as a probe delivers them
    sink(run_table[~half])
    sink.close()
    _, got = read(tmp_path / "tb")
    want = expected_scalars(run_table, per_layer)
    assert set(got) == set(want)
    for k, v in want.items():  # TensorBoard stores float32 scalars
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-30, nan_ok=True), k


def test_eval_rows_get_their_own_tags(run_table, tmp_path):
    sink = TensorBoardSink(tmp_path / "tb", modes=("train", "eval"), quantities=["out.var"])
    sink(run_table)
    sink.close()
    ea, got = read(tmp_path / "tb")
    assert set(ea.Tags()["scalars"]) == {f"varprobe/{mode}{role}/out.var" for mode in ("", "eval/")
                                         for role in ("conv", "norm", "linear")}
    want = expected_scalars(run_table, False, ("train", "eval"), {"out.var"})
    assert set(got) == set(want)


def test_hparams_go_into_the_same_directory(run_table, tmp_path):
    log_dir = tmp_path / "tb"
    sink = TensorBoardSink(log_dir, hparams={"lr": 0.1, "scheme": "bn", "depth": 20, "shape": (3, 4)})
    sink(run_table)
    sink.close()
    assert [p for p in log_dir.iterdir() if p.is_dir()] == []  # no sub-run
    ea, got = read(log_dir)
    content = ea.PluginTagToContent("hparams")
    data = {}
    for raw in content.values():
        d = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if d.HasField("session_start_info"):
            data = {k: v for k, v in d.session_start_info.hparams.items()}
    assert data["lr"].number_value == 0.1 and data["scheme"].string_value == "bn"
    assert data["depth"].number_value == 20 and data["shape"].string_value == "(3, 4)"
    assert got  # the scalars are in the same event directory
    assert len([f for f in os.listdir(log_dir) if "tfevents" in f]) == 1


def test_unknown_quantity_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'out.varr'.*valid quantities"):
        TensorBoardSink(tmp_path / "tb", quantities=["out.varr"])


def test_probe_hands_its_tables_to_the_sink(tmp_path):
    import torch
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 2))
    sink = TensorBoardSink(tmp_path / "tb", per_layer=True)
    with varprobe.Probe(model, out=tmp_path / "run", sinks=[sink], flush_every=1) as probe:
        for _ in range(3):
            loss = model(torch.randn(4, 1, 6, 6)).square().mean()
            loss.backward()
            probe.step(loss=loss)
    _, got = read(tmp_path / "tb")
    want = expected_scalars(varprobe.load_run(tmp_path / "run").frame, True)
    assert set(got) == set(want)


def test_a_raising_sink_loses_nothing_of_the_parquet_run(tmp_path):
    import torch
    from torch import nn

    class Broken(TensorBoardSink):
        def __call__(self, table):
            raise OSError("disk on fire")

    model = nn.Sequential(nn.Linear(3, 3))
    sink = Broken(tmp_path / "tb")
    probe = varprobe.Probe(model, out=tmp_path / "run", sinks=[sink], flush_every=1).attach()
    loss = model(torch.randn(4, 3)).square().mean()
    loss.backward()
    with pytest.raises(Exception, match="Broken"):
        probe.step(loss=loss)  # flush_every=1: the step's flush hands the table to the sinks
    probe.close()
    frame = varprobe.load_run(tmp_path / "run").frame
    assert (frame["quantity"] == "loss").sum() == 1


def hparams_of(log_dir):
    ea, _ = read(log_dir)
    data = {}
    for raw in ea.PluginTagToContent("hparams").values():
        d = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if d.HasField("session_start_info"):
            data.update(d.session_start_info.hparams.items())
    return data


def test_the_probe_writes_its_run_config_as_hparams(tmp_path):
    """A sink given no hparams gets the run config of meta.json when the probe attaches (nested
    keys dotted), once; hparams given to the sink are kept instead."""
    import torch
    from torch import nn
    model = nn.Sequential(nn.Linear(3, 3))
    sink = TensorBoardSink(tmp_path / "tb")
    with varprobe.Probe(model, out=tmp_path / "run", sinks=[sink], every=2, meta={"lr": 0.1, "scheme": "bn"}) as p:
        loss = model(torch.randn(4, 3)).square().mean()
        loss.backward()
        p.step(loss=loss)
        p.remove()
        p.attach()  # a second attach writes nothing more
    config = varprobe.load_run(tmp_path / "run").meta["config"]
    data = hparams_of(tmp_path / "tb")
    assert data["lr"].number_value == config["lr"] == 0.1 and data["scheme"].string_value == "bn"
    assert data["probe.every"].string_value == config["probe"]["every"] == "Every(2)"
    assert data["probe.n_layers"].number_value == 1
    files = [f for f in os.listdir(tmp_path / "tb") if "tfevents" in f]
    assert len(files) == 1
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    starts = [v.tag for e in EventFileLoader(str(tmp_path / "tb" / files[0])).Load()
              for v in e.summary.value if v.tag.endswith("session_start_info")]
    assert len(starts) == 1

    given = TensorBoardSink(tmp_path / "tb2", hparams={"depth": 20})
    with varprobe.Probe(model, sinks=[given], meta={"lr": 0.1}):
        pass
    assert set(hparams_of(tmp_path / "tb2")) == {"depth"}
