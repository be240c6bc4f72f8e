"""What a step records does not depend on the schedule, on hooks others add, on activation
checkpointing, on the model's dtype or on a forward that raised; containers and None outputs. Each
against a float64 reference computed outside the probe."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import raw_weight
from varprobe.probe import Probe

from .nets import WEIGHTED, make_net

F64 = torch.float64


def _rows(probe: Probe, quantity: str, mode: str = "train") -> dict[tuple[int, str], float]:
    f = probe.frame()
    f = f[(f.quantity == quantity) & (f["mode"] == mode)]
    return {(int(r.step), r.layer): r.value for r in f.itertuples()}


# -- half precision without autocast ---------------------------------------------------------------
def test_bfloat16_sign_persistence_matches_float64_reference():
    """A bfloat16 model: gw.sign_persistence of every layer equals the float64 fraction of filters
    whose mean gradient kept its sign, from the bfloat16 .grad; the PWS conv, whose filter means are
    zero up to rounding, stays NaN."""
    net = make_net(0, torch.bfloat16)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(3)
    gis: list[dict[str, torch.Tensor]] = []
    probe = Probe(net, quantities=["gw.sign_persistence"])
    with probe:
        for _ in range(3):
            x = torch.randn(6, 3, 11, 9, generator=g).to(torch.bfloat16)
            y = torch.randint(0, 4, (6,), generator=g)
            F.cross_entropy(net(x).float(), y).backward()
            gis.append({n: raw_weight(net.get_submodule(n)).grad.to(F64).flatten(1).mean(1) for n in WEIGHTED})
            probe.step()
            opt.step()
            opt.zero_grad()
    got = _rows(probe, "gw.sign_persistence")
    assert set(got) == {(t, n) for t in (1, 2) for n in WEIGHTED}
    for t in (1, 2):
        for n in WEIGHTED:
            if n == "block.branch.2":  # PWS
                assert math.isnan(got[(t, n)])
                continue
            want = (torch.sign(gis[t][n]) == torch.sign(gis[t - 1][n])).to(F64).mean().item()
            assert got[(t, n)] == want, (t, n)
