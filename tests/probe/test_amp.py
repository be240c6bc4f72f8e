"""AMP: with a GradScaler every gradient statistic is that of the unscaled loss, a step the scaler
skips is recorded as skipped, and bf16 autocast statistics are accumulated in float64."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.probe import Probe

from .nets import Chain, clone, expected_train, make_net
from .test_reference import _batch, _compare

F64 = torch.float64


def _train(net, probe, scaler, plan, poison=(), unscale=False, tell=True):
    """Train ``net`` under ``probe`` with ``scaler``; ``unscale``: call ``scaler.unscale_(opt)``
    before ``probe.step`` (as Lightning and the Hugging Face Trainer do), passing
    ``grads_unscaled=True`` when ``tell``."""
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    expected, prev_gi, prev_net = {}, None, None
    with probe:
        for step, batches in plan.items():
            ref = clone(net)
            if step not in poison:
                exp, prev_gi = expected_train(ref, [(x.to(F64), y) for x, y in batches], prev_gi,
                                              prev_net=prev_net)
                expected.update({(step, "train") + k: v for k, v in exp.items()})
            prev_net = ref
            for x, y in batches:
                loss = F.cross_entropy(net(x), y)
                scaled = scaler.scale(loss * (math.inf if step in poison else 1.0))
                scaled.backward()
            if unscale:
                scaler.unscale_(opt)
                probe.step(loss=loss.item(), lr=0.05, scaler=scaler, grads_unscaled=tell)
            else:
                probe.step(loss=loss.item(), lr=0.05, scaler=scaler)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    return probe.frame(), expected


def test_gradient_statistics_are_unscaled():
    """A float64 model trained with a GradScaler (scale 2^12, constant): every quantity matches the
    float64 reference of the unscaled loss, as without a scaler."""
    net = make_net(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=10 ** 6)
    plan = {0: [_batch(5, 1)], 1: [_batch(5, 2), _batch(3, 3)], 2: [_batch(4, 4)]}
    frame, expected = _train(net, Probe(net, modes=("train",)), scaler, plan)
    assert set(frame[frame.quantity == "amp.skipped"].value) == {0.0}
    frame = frame[frame.quantity != "amp.skipped"]
    for step in plan:
        expected[(step, "train", "", "loss")] = frame[(frame.step == step) & (frame.quantity == "loss")].value.item()
        expected[(step, "train", "", "lr")] = 0.05
    _compare(frame, expected, rtol=1e-9, atol=1e-13)


def _with_loss_lr(frame, expected, steps):
    for step in steps:
        expected[(step, "train", "", "loss")] = frame[(frame.step == step) & (frame.quantity == "loss")].value.item()
        expected[(step, "train", "", "lr")] = 0.05
    return expected


def test_grads_unscaled_before_step_are_not_divided_again():
    """scaler.unscale_(opt) before step(..., scaler=s, grads_unscaled=True): gw.* (from .grad,
    already unscaled) and grad_out.* / grad_in.var (tensor hooks, scaled) all match the float64
    reference of the unscaled loss."""
    net = make_net(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=10 ** 6)
    plan = {0: [_batch(5, 1)], 1: [_batch(5, 2), _batch(3, 3)], 2: [_batch(4, 4)]}
    frame, expected = _train(net, Probe(net, modes=("train",)), scaler, plan, unscale=True)
    assert set(frame[frame.quantity == "amp.skipped"].value) == {0.0}
    frame = frame[frame.quantity != "amp.skipped"]
    _compare(frame, _with_loss_lr(frame, expected, plan), rtol=1e-9, atol=1e-13)


def test_grads_unscaled_not_said_divides_gw_first_moments_twice():
    """The failure grads_unscaled exists for: without it, gw.avg_abs and gw.rms come out S times too
    small after unscale_, everything else (ratios, hook statistics) is right."""
    net = make_net(0)
    s = 2.0 ** 12
    scaler = torch.amp.GradScaler("cpu", init_scale=s, growth_interval=10 ** 6)
    plan = {0: [_batch(5, 1)], 1: [_batch(5, 2)]}
    frame, expected = _train(net, Probe(net, modes=("train",)), scaler, plan, unscale=True, tell=False)
    frame = frame[frame.quantity != "amp.skipped"]
    moved = {k: v / s for k, v in expected.items() if k[3] in ("gw.avg_abs", "gw.rms")}
    assert moved
    _compare(frame, {**_with_loss_lr(frame, expected, plan), **moved}, rtol=1e-9, atol=1e-13)


def test_grads_unscaled_bad_values_are_refused_and_change_nothing():
    net = make_net(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    probe = Probe(net, modes=("train",))
    x, y = _batch(3, 1)
    with probe:
        scaler.scale(F.cross_entropy(net(x), y)).backward()
        with pytest.raises(TypeError, match=r"grads_unscaled=\.\.\.\) takes True or False, got 'yes'"):
            probe.step(scaler=scaler, grads_unscaled="yes")
        with pytest.raises(ValueError, match=r"grads_unscaled=True\) needs scaler="):
            probe.step(grads_unscaled=True)
        assert probe.current_step == 0
        probe.step(scaler=scaler)
    assert probe.current_step == 1


def test_skipped_step_is_recorded_as_skipped_not_as_data():
    net = make_net(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=10 ** 6)
    plan = {0: [_batch(5, 1)], 1: [_batch(5, 2)], 2: [_batch(4, 4)]}
    frame, expected = _train(net, Probe(net, modes=("train",)), scaler, plan, poison=(1,))
    assert scaler.get_scale() == 2.0 ** 11  # the scaler did skip step 1
    skipped = frame.set_index(["step", "quantity"]).value.groupby(level=[0, 1]).first()
    assert skipped[(0, "amp.skipped")] == 0 and skipped[(1, "amp.skipped")] == 1 and skipped[(2, "amp.skipped")] == 0
    one = frame[frame.step == 1]
    assert not one.quantity.str.startswith(("grad_out.", "grad_in.", "gw.")).any()
    assert {"out.var", "in.var", "w.fan_var", "dec.measured"} <= set(one.quantity)
    # step 2 is data again; its sign persistence compares with step 0 (the last step not skipped):
    # the reference gets step 0's g_i as its previous one because step 1 was left out of it
    rows = frame[(frame.step != 1) & (frame.quantity != "amp.skipped")]
    for step in (0, 2):
        expected[(step, "train", "", "loss")] = rows[(rows.step == step) & (rows.quantity == "loss")].value.item()
        expected[(step, "train", "", "lr")] = 0.05
    only = ("grad_out.", "grad_in.", "gw.", "out.", "w.")
    _compare(rows, {k: v for k, v in expected.items() if k[0] != 1}, rtol=1e-9, atol=1e-13, only=only)


def test_bf16_autocast_statistics_accumulate_in_float64_and_count_overflow():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(),
                          nn.Linear(4 * 36, 3))
    seen = {}
    model[2].register_forward_hook(lambda m, a, out: seen.setdefault("y", out.detach().clone()))
    probe = Probe(model, modes=("train",))
    x = torch.randn(6, 3, 8, 8)
    x[0, 0, 0, 0] = 3e38  # bf16 keeps it; its square overflows float32 and bf16
    with probe, torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
        out.float().sum().backward()
        probe.step()
    f = probe.frame().set_index(["layer", "quantity"]).value
    assert f[("0", "out.nonfinite")] == 0 and math.isfinite(f[("0", "out.sq_mean")])  # 3e38^2 fits float64
    assert f[("0", "out.sq_mean")] > 1e70
    y = seen["y"]
    assert y.dtype == torch.bfloat16
    ref = y.to(F64)
    finite = torch.isfinite(ref)
    assert f[("2", "out.nonfinite")] == (~finite).sum().item()
    if finite.all():
        assert math.isclose(f[("2", "out.var")], ref.var(unbiased=False).item(), rel_tol=1e-9)
    for p in model.parameters():  # nothing of the probe reached training
        assert p.grad is None or p.grad.dtype == torch.float32


def test_step_rejects_a_scaler_that_is_not_a_gradscaler():
    model = Chain()
    probe = Probe(model)
    with probe:
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        try:
            probe.step(scaler=4096.0)
        except TypeError as e:
            assert "GradScaler" in str(e) and "4096.0" in str(e)
        else:
            raise AssertionError("no TypeError")
