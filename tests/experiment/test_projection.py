"""project_filter_mean_ and the runner's project_shift control, against float64 references."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from varprobe.experiment import RunConfig, project_filter_mean_, run, sgd
from varprobe.layers import PWSConv2d

F64 = torch.float64


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1, groups=2),
                         PWSConv2d(4, 5, 3), nn.Flatten(), nn.LazyLinear(3)).double()


def _backward(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 6, 6, generator=g, dtype=F64) + 0.5  # non-zero input mean: shifted gradients
    y = torch.randint(0, 3, (8,), generator=g)
    F.cross_entropy(model(x), y).backward()


def test_every_conv_gradient_loses_its_filter_means_and_nothing_else():
    model = _net()
    _backward(model)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert project_filter_mean_(model) == 3
    for name, p in model.named_parameters():
        g0 = before[name]
        if name.endswith("weight") and p.ndim == 4:
            flat = g0.reshape(g0.shape[0], -1)
            ref = (flat - flat.sum(1, keepdim=True) / flat.shape[1]).reshape(g0.shape)  # written out
            torch.testing.assert_close(p.grad, ref, rtol=0, atol=1e-15)
            assert p.grad.reshape(p.shape[0], -1).mean(1).abs().max() < 1e-16
        else:  # biases, PWS alpha, the linear head
            assert torch.equal(p.grad, g0), name
    assert float(before["0.weight"].reshape(6, -1).mean(1).abs().max()) > 1e-4  # there was a shift to remove


def test_parametrized_conv_projects_its_original_and_missing_grads_are_skipped():
    conv = parametrizations.weight_norm(nn.Conv2d(2, 3, 3).double())
    frozen = nn.Conv2d(2, 2, 1).double().requires_grad_(False)
    model = nn.Sequential(frozen, conv)
    model(torch.randn(2, 2, 5, 5, dtype=F64) + 1).square().mean().backward()
    assert project_filter_mean_(model) == 1
    v = conv.parametrizations.weight.original1
    assert conv.parametrizations.weight.original0.grad.shape == (3, 1, 1, 1)
    # torch keeps g (original0) and v (original1); the raw weight of the same shape as the kernel is v
    assert v.grad.reshape(3, -1).mean(1).abs().max() < 1e-15


def test_sgd_step_with_projection_matches_the_update_written_out():
    model = _net()
    _backward(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    project_filter_mean_(model)
    opt = sgd(model, lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt.step()
    w, g = start["0.weight"], grads["0.weight"]
    projected = g - g.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(model[0].weight.detach(), w - 0.1 * (projected + 5e-4 * w), rtol=0, atol=1e-15)


def test_project_shift_run_records_a_zero_average_gradient(tmp_path):
    base = RunConfig(model="simple_cnn", scheme="plain", data="digits", batch_size=32, steps=6, threads=1)
    shifted = run(base, tmp_path / "plain")
    projected = run(base.replace(project_shift=True), tmp_path / "projected")
    assert projected.config["project_shift"] is True and projected.status == "finished"

    def ratio(r):
        f = r.frame
        f = f[f.module_type.str.contains("Conv")]  # the linear head is not projected
        pick = lambda q: f[f.quantity == q].set_index(["step", "layer"])["value"]  # noqa: E731
        return pick("gw.avg_abs") / pick("gw.rms")
    assert float(ratio(projected).max()) < 1e-6  # float32 rounding
    assert float(ratio(shifted).median()) > 1e-3
    loss = lambda r: r.frame[r.frame.quantity == "loss"]["value"].to_numpy()  # noqa: E731
    assert loss(projected)[0] == loss(shifted)[0]  # same init and batch: only the updates differ
    assert (loss(projected)[1:] != loss(shifted)[1:]).all()
