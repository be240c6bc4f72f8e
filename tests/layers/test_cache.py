"""The eval-mode kernel of ReparamConv2d is never stale (paper-notes 2.4: the official cache goes
stale). There is no cache: the kernel is recomputed under no_grad on every eval forward
(benchmarks/RESULTS.md, "Eval kernel").

Every check compares the module's eval output with a fresh ``F.conv2d(x, kernel(), ...)``.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import CenteredConv2d, PWSConv2d, WNConv2d, WSConv2d

CLASSES = [PWSConv2d, WSConv2d, WNConv2d, CenteredConv2d]


def _make(cls, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    m = cls(6, 8, 3, stride=2, padding=1, groups=2).to(dtype)
    with torch.no_grad():  # non-trivial values for every parameter
        for name, p in m.named_parameters():
            if name != "weight":
                p.uniform_(0.5, 1.5) if p.dim() == 4 else p.normal_()
    return m


def _x(dtype=torch.float32, seed=1):
    return torch.randn(3, 6, 9, 9, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def fresh(m, x):
    with torch.no_grad():
        return F.conv2d(x, m.kernel(), m.bias, m.stride, m.padding, m.dilation, m.groups)


def assert_matches_fresh(m, x, rtol=1e-6):
    assert not m.training
    with torch.no_grad():
        y = m(x)
    ref = fresh(m, x)
    assert y.dtype == ref.dtype == x.dtype
    torch.testing.assert_close(y, ref, rtol=rtol, atol=rtol * ref.abs().max().item())


@pytest.mark.parametrize("cls", CLASSES)
def test_eval_forward_computes_the_kernel_without_autograd(cls):
    m = _make(cls)
    x = _x()
    calls = []
    original = m.kernel

    def counting_kernel():
        calls.append(torch.is_grad_enabled())
        return original()

    m.kernel = counting_kernel
    m.eval()
    y1, y2, y3 = m(x), m(x), m(x)
    assert calls == [False, False, False]  # computed on every eval forward, under no_grad
    cached = m.eval_kernel()
    calls.clear()
    assert not cached.requires_grad and cached.grad_fn is None
    assert torch.equal(y1, y2) and torch.equal(y2, y3)
    torch.testing.assert_close(cached, original().detach(), rtol=0, atol=0)
    # no autograd path from the eval output to the raw weight
    y1.sum().backward()
    assert m.weight.grad is None
    # training mode recomputes the kernel on every forward, with autograd
    m.train()
    m(x)
    m(x).sum().backward()
    assert calls == [True, True]
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", CLASSES)
def test_eval_output_equals_train_output(cls):
    m = _make(cls, seed=2)
    x = _x(seed=3)
    y_train = m.train()(x).detach()
    y_eval = m.eval()(x)
    torch.testing.assert_close(y_eval, y_train, rtol=1e-6, atol=1e-6 * y_train.abs().max().item())
    torch.testing.assert_close(m.train()(x).detach(), y_train, rtol=0, atol=0)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("impl", ["for-loop", "foreach", "fused"])
def test_not_stale_after_optimizer_steps(cls, impl):
    """SGD with momentum and weight decay; steps taken both after a train() / eval() round trip
    and while staying in eval mode with a primed cache (no mode switch to clear it)."""
    m = _make(cls, seed=4)
    x = _x(seed=5)
    flags = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[impl]
    opt = torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-2, **flags)
    gen = torch.Generator().manual_seed(6)
    m.eval()
    before = m(x).detach()
    for _ in range(2):  # train -> step -> eval
        m.train()
        opt.zero_grad()
        (torch.randn(m(x).shape, generator=gen) * m(x)).sum().backward()
        opt.step()
        m.eval()
        assert_matches_fresh(m, x)
    for _ in range(2):  # eval, cache primed, step without any mode switch
        m(x)
        for p in m.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        assert_matches_fresh(m, x)
    assert (m(x) - before).abs().max() > 1e-2  # the steps really changed the output


@pytest.mark.parametrize("cls", CLASSES)
def test_not_stale_after_in_place_edits_in_eval_mode(cls):
    """no_grad in-place writes (manual weight decay, nn.init re-initialisation, a PWS alpha fill)
    while staying in eval mode with a primed cache."""
    m = _make(cls, seed=23).eval()
    x = _x(seed=24)
    m(x)
    with torch.no_grad():
        m.weight.mul_(0.9)
    assert_matches_fresh(m, x)
    nn.init.normal_(m.weight)
    assert_matches_fresh(m, x)
    for name, p in m.named_parameters():
        if name != "weight":
            m(x)
            with torch.no_grad():
                p.fill_(0.7)
            assert_matches_fresh(m, x)


@pytest.mark.parametrize("cls", CLASSES)
def test_not_stale_after_load_state_dict(cls):
    m = _make(cls, seed=7)
    other = _make(cls, seed=8)
    x = _x(seed=9)
    parent = nn.Sequential(m).eval()
    y_old = parent(x)
    parent.load_state_dict(nn.Sequential(other).state_dict())
    assert_matches_fresh(m, x)
    torch.testing.assert_close(parent(x), fresh(other, x), rtol=1e-6, atol=1e-6)
    assert (parent(x) - y_old).abs().max() > 1e-2
    # and directly on the module
    m.load_state_dict(_make(cls, seed=10).state_dict())
    assert_matches_fresh(m, x)


@pytest.mark.parametrize("cls", CLASSES)
def test_not_stale_across_mode_switches(cls):
    m = _make(cls, seed=11)
    x = _x(seed=12)
    m.eval()
    m(x)
    m.train()
    with torch.no_grad():  # edit while in train mode, then back to eval
        m.weight.mul_(-1.5)
    m.eval()
    assert_matches_fresh(m, x)
    m.train()
    m.eval()
    assert_matches_fresh(m, x)
    # recursive eval()/train() from a parent container
    parent = nn.Sequential(nn.Identity(), m)
    parent.train()
    with torch.no_grad():
        m.weight.add_(0.1)
    parent.eval()
    assert_matches_fresh(m, x)


@pytest.mark.parametrize("cls", CLASSES)
def test_not_stale_after_dtype_change(cls):
    m = _make(cls, seed=13).eval()
    x = _x(seed=14)
    m(x)  # float32 cache
    m.to(torch.float64)
    assert m.eval_kernel().dtype == torch.float64
    # float64 tolerance: a float32 kernel merely cast to float64 would be off by ~1e-7
    assert_matches_fresh(m, x.double(), rtol=1e-12)
    m.to(torch.float32)
    assert_matches_fresh(m, x)


@pytest.mark.parametrize("cls", CLASSES)
def test_deepcopy_of_an_eval_module_follows_its_own_weights(cls):
    m = _make(cls, seed=15).eval()
    x = _x(seed=16)
    y = m(x)
    c = copy.deepcopy(m)
    with torch.no_grad():
        c.weight.mul_(2.0).add_(0.3)
    assert_matches_fresh(c, x)
    torch.testing.assert_close(m(x), y, rtol=0, atol=0)


@pytest.mark.parametrize("cls", CLASSES)
def test_cache_filled_under_inference_mode_is_usable_with_autograd(cls):
    """Regression: a cache filled inside torch.inference_mode() used to be an inference tensor,
    so a later eval forward with autograd (e.g. input gradients) raised RuntimeError."""
    m = _make(cls, seed=17).eval()
    x = _x(seed=18)
    with torch.inference_mode():
        y_inf = m(x)
    xg = x.clone().requires_grad_()
    y = m(xg)
    y.sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    torch.testing.assert_close(y.detach(), y_inf.clone(), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [PWSConv2d, WNConv2d])
def test_data_writes_need_a_mode_switch(cls):
    """Documented limitation: in-place writes through ``.data`` bypass the version counter; calling
    .eval() again refreshes the cache."""
    m = _make(cls, seed=19).eval()
    x = _x(seed=20)
    m(x)
    m.weight.data.mul_(-1.0)
    m.eval()
    assert_matches_fresh(m, x)


def test_data_writes_without_mode_switch_are_seen():
    """Once a limitation of the version-keyed cache (``.data`` writes bump no version counter)."""
    m = _make(PWSConv2d, seed=21).eval()
    x = _x(seed=22)
    m(x)
    m.alpha.data.mul_(3.0)
    assert_matches_fresh(m, x)
