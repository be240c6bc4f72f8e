"""Probes never change training: parameters after N steps are bit-identical with and without one."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from varprobe.probe import Probe

from .nets import make_net


def _train(probe_kwargs, steps=4):
    net = make_net(0, torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    probe = Probe(net, **probe_kwargs) if probe_kwargs is not None else None
    if probe:
        probe.attach()
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        for _ in range(1 + step % 2):  # accumulation on odd steps
            x, y = torch.randn(5, 3, 11, 9, generator=g), torch.randint(0, 4, (5,), generator=g)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
        if probe:
            probe.step(loss=loss, lr=0.1)
        opt.step()
        opt.zero_grad()
        if step == 2:  # an eval pass in the middle
            net.eval()
            with torch.no_grad():
                net(torch.randn(3, 3, 11, 9, generator=g))
            net.train()
    if probe:
        probe.remove()
        assert len(probe.frame()) > 0
    return net.state_dict()


def test_parameters_bit_identical_with_and_without_probe():
    ref = _train(None)
    for kwargs in ({}, {"every": 2}, {"quantities": "forward"}):
        got = _train(kwargs)
        for k in ref:
            assert torch.equal(ref[k], got[k]), (kwargs, k)
