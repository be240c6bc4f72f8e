"""A real probed run, whose table the sink tests feed to the sinks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import varprobe


@pytest.fixture(scope="module")
def run_table(tmp_path_factory):
    """The table of a 3-step probed run of a tiny conv net, with eval forwards after each step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = tmp_path_factory.mktemp("run") / "r"
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    with varprobe.Probe(model, out=out, flush_every=2) as probe:
        for _ in range(3):
            model.train()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            probe.step(loss=loss, lr=0.1)
            opt.step()
            opt.zero_grad()
            model.eval()
            with torch.no_grad():
                model(x)
    frame = varprobe.load_run(out).frame
    assert set(frame["mode"]) == {"train", "eval"} and frame["step"].nunique() >= 3
    return frame
