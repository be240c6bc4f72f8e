"""w.update_ratio against a float64 reference computed outside the probe: the raw weights copied to
numpy before and after each ``opt.step()`` of the training loop."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varprobe.layers import raw_weight
from varprobe.probe import Probe
from varprobe.probe.updates import UpdateRatios

from .nets import WEIGHTED, make_net


def _weights(net) -> dict[str, np.ndarray]:
    return {n: raw_weight(net.get_submodule(n)).detach().to(torch.float64).numpy().copy() for n in WEIGHTED}


def _train(net, every, steps: int, dtype, hook=None):
    """Train with a probe recording w.update_ratio; return its rows and the reference
    {(step, layer): ratio} of every step >= 1 (the update made by the step before)."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    ref: dict[tuple[int, str], float] = {}
    probe = Probe(net, every=every, quantities=["w.update_ratio", "out.var"])
    with probe:
        for t in range(steps):
            if hook is not None:
                hook(t, net, probe)
            x = torch.randn(4, 3, 11, 9, generator=g).to(dtype)
            y = torch.randint(0, 4, (4,), generator=g)
            F.cross_entropy(net(x), y).backward()
            probe.step()
            before = _weights(net)
            opt.step()
            opt.zero_grad()
            after = _weights(net)
            for n in WEIGHTED:  # float64 numpy, independent of the probe's foreach path
                ref[(t + 1, n)] = float(np.sqrt(np.sum((after[n] - before[n]) ** 2)) / np.sqrt(np.sum(before[n] ** 2)))
    f = probe.frame()
    f = f[f.quantity == "w.update_ratio"]
    return {(int(r.step), r.layer): r.value for r in f.itertuples()}, ref


def _every_2_or_3(step: int) -> bool:
    return step in (0, 2, 3, 7, 8)


@pytest.mark.parametrize("every, recorded", [(1, set(range(9))), (3, {0, 3, 6}), (_every_2_or_3, {0, 2, 3, 7, 8})])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_update_ratio_matches_float64_reference(every, recorded, dtype, rtol):
    got, ref = _train(make_net(0, dtype), every, 9, dtype)
    assert set(got) == {(t, n) for t in recorded - {0} for n in WEIGHTED}  # step 0: no previous weight, no row
    for n in WEIGHTED:
        for t in recorded - {0}:
            assert got[(t, n)] == pytest.approx(ref[(t, n)], rel=rtol), (t, n)
            assert ref[(t, n)] > 1e-4  # the weights did move: the test can fail


def test_absent_when_the_previous_weight_is_unknown():
    """Detached during the step before (remove(), one unprobed update, attach()) or a weight whose
    dtype changed: no row at that step (undefined, as gw.sign_persistence at the first step), the
    reference value again from the next one; UpdateRatios itself gives NaN there and says which
    layers are known."""
    def hook(t, net, probe):
        if t == 3:
            probe.remove()
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            F.cross_entropy(net(torch.randn(2, 3, 11, 9, dtype=torch.float64)), torch.tensor([0, 1])).backward()
            opt.step()
            net.zero_grad()
            probe.attach()

    got, ref = _train(make_net(0), 1, 6, torch.float64, hook)
    for n in WEIGHTED:
        assert (0, n) not in got and (3, n) not in got
        for t in (1, 2, 4, 5):
            assert got[(t, n)] == pytest.approx(ref[(t, n)], rel=1e-12)

    net = make_net(0, torch.float32)
    u = UpdateRatios()
    mods = [net.get_submodule(n) for n in WEIGHTED]
    u.snapshot(mods, 0)
    assert torch.equal(u.ratios(mods, 1), torch.zeros(len(mods), dtype=torch.float64))
    assert torch.isnan(u.ratios(mods, 2)).all()  # the snapshot is of step 0, not 1
    assert u.known(mods, 1) == [True] * len(mods) and u.known(mods, 2) == [False] * len(mods)
    net.head.double()  # one layer's weight changes dtype: NaN there only
    r = u.ratios(mods, 1)
    assert u.known(mods, 1) == [True] * (len(mods) - 1) + [False]
    assert torch.isnan(r[-1]) and torch.equal(r[:-1], torch.zeros(len(mods) - 1, dtype=torch.float64))
    with torch.no_grad():
        net.stem.weight.mul_(1.5)  # ||1.5 W - W|| / ||W|| = 0.5 exactly
    assert u.ratios(mods, 1)[0].item() == pytest.approx(0.5, rel=1e-7)


def test_not_in_the_forward_preset_and_absent_when_not_asked():
    from varprobe.probe import PRESETS
    assert "w.update_ratio" in PRESETS["all"] and "w.update_ratio" in PRESETS["causes"]
    assert "w.update_ratio" not in PRESETS["forward"]
    net = make_net(0)
    probe = Probe(net, quantities="forward")
    with probe:
        F.cross_entropy(net(torch.randn(2, 3, 11, 9, dtype=torch.float64)), torch.tensor([0, 1])).backward()
        probe.step()
    assert "w.update_ratio" not in set(probe.frame().quantity) and probe._params.updates.nbytes == 0
