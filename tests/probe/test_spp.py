"""spp(): the signal-propagation table of one forward, leaving the model untouched."""
from __future__ import annotations

import torch

from varprobe.probe import spp

from .nets import Chain, clone, make_net, moment_stats, ref_forward


def test_spp_matches_reference_and_restores_state():
    net = make_net(0)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(6, 3, 11, 9, dtype=torch.float64)
    frame = spp(net, x)
    ref = clone(net).train()
    with torch.no_grad():
        t = ref_forward(ref, x)
    got = frame.set_index(["layer", "quantity"]).value
    assert set(frame["mode"]) == {"train"} and set(frame["step"]) == {0}
    for (layer, key, cdim) in (("stem", "h0", 1), ("bn", "b0", 1), ("head", "out", -1)):
        want = moment_stats([t[key]], cdim)
        for s in ("var", "ch_sq_mean", "ch_var"):
            assert abs(got[(layer, f"out.{s}")] - want[s]) <= 1e-10 * max(1.0, abs(want[s]))
    blk = moment_stats([t["blk"]], 1)
    assert abs(got[("block", "block.out.ch_sq_mean")] - blk["ch_sq_mean"]) < 1e-12
    assert not any(q.startswith(("grad", "w.", "gw.")) for q in frame.quantity)
    assert not net.training  # modes restored
    for k, v in net.state_dict().items():  # BN running statistics restored
        assert torch.equal(v, before[k]), k


def test_spp_from_shape_with_gradients_keeps_grads():
    model = Chain()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    frame = spp(model, (4, 3, 8, 8), grad=True, seed=1)
    assert {"grad_out.var", "grad_in.var", "out.ch_sq_mean"} <= set(frame.quantity)
    assert all(torch.all(p.grad == 7.0) for p in model.parameters())
    again = spp(model, (4, 3, 8, 8), grad=True, seed=1)
    assert (frame.value.values == again.value.values).all()
