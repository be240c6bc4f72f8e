"""The theory-at-initialization rows (T-<scheme>): the measure against a float64 reference written
out here, and the row's fixed definition."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.claims import CLAIMS, MAIN_SCHEMES, PROFILES, rows, summarize
from varprobe.claims.catalogue import THEORY_INIT_ERROR
from varprobe.claims.measures import Evidence, theory_error_at_init
from varprobe.probe import Probe


def _reference_var(conv: nn.Conv2d, x: torch.Tensor) -> float:
    """out.ch_var predicted for independent entries, each input channel with its own mean and
    variance: per output channel, the mean over positions of Var[y] (the squared kernel on the image
    of the channel variances) plus the spread over positions of E[y] (the conv of the image of the
    channel means), averaged over channels."""
    x = x.double()
    mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    w = conv.weight.detach().double()
    shape = (1, x.shape[1], *x.shape[2:])
    e = F.conv2d(mu[None, :, None, None].expand(shape), w, None, padding=conv.padding)[0].flatten(1)
    v = F.conv2d(var[None, :, None, None].expand(shape), w * w, None, padding=conv.padding)[0].flatten(1)
    return float((v.mean(1) + (e - e.mean(1, keepdim=True)).square().mean(1)).mean())


def _tiny_run(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 36, 2))
    inputs, outputs = {}, {}

    def keep(name):
        def hook(m, a, y):
            inputs[name], outputs[name] = a[0].detach(), y.detach()
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            mod.register_forward_hook(keep(name))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    probe = Probe(model)
    with probe:
        for step in range(2):
            x = torch.randn(64, 3, 6, 6)
            model(x).square().mean().backward()
            probe.step()
            if step == 0:  # the reference at the first step, from that step's own inputs and outputs
                errors = []
                for name, mod in model.named_modules():
                    if isinstance(mod, nn.Conv2d):
                        measured = outputs[name].double().var((0, 2, 3), unbiased=False).mean().item()
                        errors.append(abs(measured / _reference_var(mod, inputs[name]) - 1))
                reference = float(np.median(errors))
            opt.step()
            opt.zero_grad()
    return probe.frame(), reference


def test_theory_error_at_init_is_the_median_conv_error_at_the_first_step():
    frame, reference = _tiny_run(0)
    got = theory_error_at_init(frame)
    assert got == pytest.approx(reference, rel=1e-5, abs=1e-7)
    later = theory_error_at_init(frame[frame["step"] == 1])  # another step: another value
    assert later != pytest.approx(got, rel=1e-3)
    assert np.isnan(theory_error_at_init(frame[frame["quantity"] == "loss"]))


def test_theory_rows_read_each_scheme_at_the_largest_lr_with_a_fixed_threshold():
    by = {c.id: c for c in CLAIMS}
    assert THEORY_INIT_ERROR == 0.10
    for s in MAIN_SCHEMES:
        c = by[f"T-{s}"]
        assert (c.kind, c.direction, c.threshold, c.at) == ("mean", "<", 0.10, "none")
        assert "theory.png" in c.figures
    ids = [r[1] for r in rows(PROFILES["standard"])]
    assert "T-pws" in ids and not any(i.startswith("T-pws@") for i in ids)  # once, not per lr
    p = PROFILES["tiny"]
    runs, refs = {}, []
    for seed in range(2):
        frame, ref = _tiny_run(seed)
        runs[("plain", max(p.lrs_large), seed)] = SimpleNamespace(frame=frame)
        runs[("plain", p.lr_small, seed)] = SimpleNamespace(frame=pd.DataFrame())  # not read
        refs.append(ref)
    ev = Evidence(p, runs, torch.zeros(1))
    values = [by["T-plain"].measure(ev, seed, None) for seed in range(2)]
    np.testing.assert_allclose(values, refs, rtol=1e-5, atol=1e-7)
    s = summarize("mean", values, "<", THEORY_INIT_ERROR)
    assert s.interval.estimate == pytest.approx(np.mean(refs), rel=1e-5)
