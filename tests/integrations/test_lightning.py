"""The Lightning ProbeCallback in a real lightning.pytorch.Trainer (CPU, a few steps)."""
from __future__ import annotations

import copy

import pytest

pl = pytest.importorskip("lightning.pytorch", reason="needs the lightning extra: pip install 'varprobe[lightning]'")
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402

import varprobe  # noqa: E402
from varprobe.integrations.lightning import ProbeCallback  # noqa: E402

from .reference import assert_same_records, capture_batches, plain_loop_first_step  # noqa: E402

LR = 0.1


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def loss_fn(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


class Module(pl.LightningModule):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model

    def training_step(self, batch, batch_idx):
        x, y = batch
        return loss_fn(self.net, x, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def loader(n=16, batch=4):
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)),
                      batch_size=batch, shuffle=False)


def fp16_cpu():
    """Lightning maps precision="16-mixed" on CPU to bf16 (no scaler); the plugin forces fp16
    autocast with a CPU GradScaler, the code path of 16-mixed on a GPU."""
    from lightning.pytorch.plugins.precision import MixedPrecision
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))


def trainer(steps, accumulate=1, callbacks=(), devices=1, **kw):
    return pl.Trainer(accelerator="cpu", devices=devices, max_steps=steps, accumulate_grad_batches=accumulate,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, callbacks=list(callbacks), **kw)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_one_record_per_optimizer_step_equal_to_the_plain_loop(tmp_path, accumulate):
    torch.manual_seed(0)
    model = net()
    reference = copy.deepcopy(model)
    seen, handle = capture_batches(model)
    data = loader()
    labels = [y for _, y in data]
    cb = ProbeCallback(tmp_path / "pl", module="net", flush_every=1)
    trainer(3, accumulate, [cb]).fit(Module(model), data)
    handle.remove()
    run = varprobe.load_run(tmp_path / "pl")
    assert run.meta["status"] == "finished"
    frame = run.frame
    train = frame[frame["mode"] == "train"]
    assert sorted(train["step"].unique()) == [0, 1, 2]  # max_steps counts optimizer steps
    assert len(seen) == 3 * accumulate
    assert set(train["layer"]) - {""} == {n for n, m in reference.named_modules()
                                          if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))}
    micro = list(zip(seen[:accumulate], labels[:accumulate]))
    want = plain_loop_first_step(reference, micro, loss_fn, LR, tmp_path, flush_every=1)
    assert_same_records(train[train["step"] == 0], want)


def test_exception_closes_the_run_as_failed_and_keeps_flushed_steps(tmp_path):
    class Boom(Module):
        def training_step(self, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("boom at batch 2")
            return super().training_step(batch, batch_idx)

    torch.manual_seed(0)
    cb = ProbeCallback(tmp_path / "pl", module="net", flush_every=1)
    with pytest.raises(RuntimeError, match="boom"):
        trainer(5, 1, [cb]).fit(Boom(net()), loader())
    run = varprobe.load_run(tmp_path / "pl")
    assert run.meta["status"] == "failed" and "boom" in run.meta["error"]["message"]
    assert sorted(run.frame.loc[run.frame["mode"] == "train", "step"].unique()) == [0, 1]


def test_unknown_submodule_is_one_line_naming_the_children(tmp_path):
    cb = ProbeCallback(tmp_path / "pl", module="nett")
    with pytest.raises(ValueError, match="'nett'.*children: net"):
        trainer(1, 1, [cb]).fit(Module(net()), loader())


def test_the_trainer_scaler_is_found_under_16_mixed(tmp_path):
    """Lightning 2.6 keeps the GradScaler on the precision plugin (MixedPrecision.scaler) and
    unscales .grad before on_before_optimizer_step."""
    from varprobe.integrations.amp import grads_unscaled

    found = []

    class Spy(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            scaler = trainer.precision_plugin.scaler
            found.append((type(scaler), grads_unscaled(scaler, optimizer), scaler.get_scale()))

    trainer(2, 1, [Spy()], plugins=[fp16_cpu()]).fit(Module(net()), loader())
    assert found and all(t is torch.amp.GradScaler and unscaled for t, unscaled, _ in found)


def test_16_mixed_records_unscaled_gradients(tmp_path):
    """Tensor-hook statistics (grad_out.var, scaled during backward) and .grad statistics (gw.*,
    unscaled by Lightning before the hook: grads_unscaled=True) both equal those of an fp16 plain
    loop without loss scaling."""
    torch.manual_seed(0)
    model = net()
    reference = copy.deepcopy(model)
    seen, handle = capture_batches(model)
    data = loader()
    quantities = ["grad_out.var", "gw.avg_abs", "gw.rms", "gw.shift_ratio", "loss"]
    cb = ProbeCallback(tmp_path / "pl", module="net", flush_every=1, quantities=quantities)
    trainer(1, 1, [cb], plugins=[fp16_cpu()]).fit(Module(model), data)
    handle.remove()
    frame = varprobe.load_run(tmp_path / "pl").frame
    got = frame[(frame["mode"] == "train") & (frame["step"] == 0)]
    with torch.autocast("cpu", dtype=torch.float16):
        want = plain_loop_first_step(reference, [(seen[0], next(iter(data))[1])], loss_fn, LR, tmp_path,
                                     flush_every=1, quantities=quantities)
    assert_same_records(got, want, rel=1e-2)


def ddp_net() -> nn.Module:
    """No BatchNorm: its batch statistics are per rank under DDP, so the global-batch reference
    would differ for a reason that has nothing to do with the probe."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def test_ddp_two_ranks_write_one_run_of_global_batch_statistics(tmp_path):
    """Two CPU ranks (gloo, ddp_spawn), 2 samples each per step: only rank 0 writes the run, one
    record per optimizer step, and step 0's activation and gradient statistics are those of the
    plain-loop probe on the 4-sample global batch."""
    torch.manual_seed(0)
    model = ddp_net()
    reference = copy.deepcopy(model)
    data = loader(n=8, batch=2)
    out = tmp_path / "ddp"
    cb = ProbeCallback(out, module="net", quantities=["out.var", "out.mean", "grad_out.var", "in.var"])
    trainer(2, strategy="ddp_spawn", devices=2, callbacks=[cb]).fit(Module(model), data)

    frame = varprobe.load_run(out).frame
    assert sorted(frame["step"].unique()) == [0, 1]
    assert varprobe.load_run(out).meta["config"]["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # rank 1 wrote nothing
    x, y = data.dataset.tensors
    # Lightning wraps a training loader in DistributedSampler(shuffle=True, seed=0): step 0 is the
    # first 2 indices of each rank's share.
    shares = [list(DistributedSampler(range(8), num_replicas=2, rank=r, shuffle=True, seed=0)) for r in (0, 1)]
    first = shares[0][:2] + shares[1][:2]
    want = plain_loop_first_step(reference, [(x[first], y[first])], loss_fn, LR, tmp_path / "ref",
                                 quantities=["out.var", "out.mean", "grad_out.var", "in.var"])
    got = frame[(frame["step"] == 0) & (frame["mode"] == "train")]
    assert_same_records(got[got["quantity"] != "loss"], want[want["quantity"] != "loss"], rel=1e-5)


class GlobalSteps(pl.Callback):
    """trainer.global_step at each optimizer step, with the loss Lightning backpropagated there."""

    def __init__(self) -> None:
        self.loss: dict[int, float] = {}

    def on_before_backward(self, trainer, pl_module, loss):
        self.loss[trainer.global_step] = float(loss.detach())


def test_a_resumed_fit_records_global_steps_on_the_global_schedule(tmp_path):
    """Resumed at global step 3 to max_steps=7 with every=2: the recorded steps are the global
    steps 4 and 6 (not 0 and 2, nor 3 and 5), each with the loss Lightning backpropagated at it."""
    torch.manual_seed(0)
    first = trainer(3, callbacks=[ProbeCallback(tmp_path / "first", every=2, module="net", flush_every=1)])
    first.fit(Module(net()), loader(n=12))  # 3 batches an epoch: the checkpoint ends epoch 0
    first.save_checkpoint(tmp_path / "c.ckpt")
    spy = GlobalSteps()
    cb = ProbeCallback(tmp_path / "resumed", every=2, module="net", flush_every=1)
    trainer(7, callbacks=[spy, cb]).fit(Module(net()), loader(n=12), ckpt_path=tmp_path / "c.ckpt")
    assert sorted(spy.loss) == [3, 4, 5, 6]
    frame = varprobe.load_run(tmp_path / "resumed").frame
    train = frame[frame["mode"] == "train"]
    assert sorted(train["step"].unique()) == [4, 6]
    loss = train[train["quantity"] == "loss"].set_index("step")["value"]
    assert loss.to_dict() == pytest.approx({s: spy.loss[s] for s in (4, 6)}, rel=1e-6)
    first_steps = varprobe.load_run(tmp_path / "first").frame["step"]
    assert sorted(first_steps.unique()) == [0, 2]


def test_probe_kwargs_cannot_set_the_start_step(tmp_path):
    with pytest.raises(TypeError, match="start_step.*global step"):
        ProbeCallback(tmp_path / "pl", start_step=3)


def test_a_tensorboard_sink_gets_the_run_config_as_hparams(tmp_path):
    """README: the TensorBoard sink holds the run config as hparams; the callback's probe hands it
    the config of meta.json (the trainer's facts and the probe's settings) when it attaches."""
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from varprobe.sinks import TensorBoardSink
    cb = ProbeCallback(tmp_path / "pl", every=2, module="net", sinks=[TensorBoardSink(tmp_path / "tb")],
                       meta={"lr": LR})
    trainer(1, callbacks=[cb]).fit(Module(net()), loader())
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    hparams = {}
    for raw in ea.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            hparams.update(data.session_start_info.hparams.items())
    assert hparams["trainer"].string_value == "lightning" and hparams["lr"].number_value == LR
    assert hparams["probe.every"].string_value == "Every(2)"
    assert "varprobe/loss" in ea.Tags()["scalars"]
