"""Gradient accumulation: the micro-batches of one step merge into that step's moments, each
counted once, equal to a float64 reference over the concatenated micro-batches."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from varprobe.probe import Probe

from .nets import Chain, moment_stats

F64 = torch.float64


def _reference(net: Chain, x, y):
    """Every tensor of the concatenated batch, its activation gradients and the weight gradients
    (float64, no hooks): conv1 -> ReLU -> conv2 -> ReLU -> mean -> head."""
    t = {"x": x}
    t["h1"] = net.conv1(x)
    t["a1"] = torch.relu(t["h1"])
    t["h2"] = net.conv2(t["a1"])
    t["p"] = torch.relu(t["h2"]).mean((2, 3))
    t["out"] = net.head(t["p"])
    loss = F.cross_entropy(t["out"], y)
    keys = ("h1", "a1", "h2", "p", "out")
    params = [net.conv1.weight, net.conv2.weight, net.head.weight]
    g = torch.autograd.grad(loss, [t[k] for k in keys] + params)
    return t, dict(zip(keys, g)), dict(zip(("conv1", "conv2", "head"), g[len(keys):]))


def test_micro_batches_merge_into_one_step():
    torch.manual_seed(0)
    net = Chain(c=4, bn=False).to(F64)
    g = torch.Generator().manual_seed(0)
    sizes = (2, 3, 4)
    xs = [torch.randn(n, 3, 7, 6, generator=g, dtype=F64) for n in sizes]
    ys = [torch.randint(0, 3, (n,), generator=g) for n in sizes]
    t, grads, wgrads = _reference(net, torch.cat(xs), torch.cat(ys))
    probe = Probe(net, quantities=["in.*", "out.*", "grad_out.*", "grad_in.var", "gw.avg_abs", "gw.rms",
                                   "gw.shift_ratio"])
    with probe:
        for x, y in zip(xs, ys):  # each micro-batch's loss weighted by its share: .grad = batch grad
            (F.cross_entropy(net(x), y) * (x.shape[0] / sum(sizes))).backward()
        probe.step()
    got = probe.frame().set_index(["layer", "quantity"]).value
    want = {}
    for name, k_in, k_out, cdim in (("conv1", "x", "h1", 1), ("conv2", "a1", "h2", 1), ("head", "p", "out", -1)):
        for s in ("mean", "var", "sq_mean"):
            want[(name, f"in.{s}")] = moment_stats([t[k_in]], cdim)[s]
        for s, v in moment_stats([t[k_out]], cdim).items():
            want[(name, f"out.{s}")] = v
        go = moment_stats([grads[k_out]], cdim)
        want[(name, "grad_out.var")], want[(name, "grad_out.sq_mean")] = go["var"], go["sq_mean"]
        if k_in != "x":
            want[(name, "grad_in.var")] = moment_stats([grads[k_in]], cdim)["var"]
        w = wgrads[name].flatten(1)
        gi = w.mean(1)
        rms = w.square().mean().sqrt()
        want[(name, "gw.avg_abs")], want[(name, "gw.rms")] = gi.abs().mean().item(), rms.item()
        want[(name, "gw.shift_ratio")] = (gi.abs().mean() / (rms / math.sqrt(w.shape[1]))).item()
    assert set(got.index) == set(want)
    for key, v in want.items():
        assert math.isclose(got[key], v, rel_tol=1e-9, abs_tol=1e-15), (key, got[key], v)
