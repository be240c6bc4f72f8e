"""step() keeps raw reductions and the flush derives the rows (issue 27, item 2): deriving many
buffered steps at once gives what deriving each alone gives, costs a fixed number of ops whatever
the number of steps, and a step whose rows cannot be derived costs only itself."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.probe import Probe
from varprobe.probe.table import Program
from varprobe.record import load_run

from .opcount import count_ops


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 3, 8, 8, generator=g), torch.randint(0, 3, (5,), generator=g)


def _train(probe: Probe, model: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for s in range(steps):
        x, y = _batch(s)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        probe.step(loss=loss.detach(), lr=0.1)
        opt.step()
        opt.zero_grad()


def _frame(flush_every: int) -> pd.DataFrame:
    model = _net()
    with Probe(model, flush_every=flush_every) as probe:
        _train(probe, model, 5)
        return probe.frame()


def test_steps_derived_together_equal_steps_derived_alone():
    alone, together = _frame(1), _frame(100)
    assert len(alone) == len(together) > 0
    assert {"dec.iid", "gw.sign_persistence", "gw.bias_corr", "bn.var_ratio", "w.fan_var",
            "w.update_ratio"} <= set(together.quantity)
    pd.testing.assert_frame_equal(alone.drop(columns="value"), together.drop(columns="value"))
    torch.testing.assert_close(torch.tensor(together.value.to_numpy()), torch.tensor(alone.value.to_numpy()),
                               rtol=1e-12, atol=1e-15, equal_nan=True)


def test_flush_costs_the_same_ops_whatever_the_number_of_steps_it_carries(one_thread):
    few = count_ops(_net, _batch(), Probe, steps=2)
    many = count_ops(_net, _batch(), Probe, steps=5)
    assert few.flush * 2 == many.flush * 5 > 0
    assert few.step == many.step


class Injected(RuntimeError):
    pass


def test_a_step_whose_rows_cannot_be_derived_costs_only_itself(tmp_path, monkeypatch):
    model = _net()
    out = tmp_path / "r"
    real = Program.run

    def run(self, raw):
        if torch.isnan(raw).any():
            raise Injected("injected derivation failure")
        return real(self, raw)

    with pytest.raises(Injected, match="injected"):
        with Probe(model, out=out, flush_every=100) as probe:
            _train(probe, model, 4)
            assert len(probe._pending) == 4
            probe._pending[2].raw[0] = torch.nan  # step 2's kept reductions, derived with steps 1 and 3
            monkeypatch.setattr(Program, "run", run)
    run_ = load_run(out)
    assert run_.meta["status"] == "failed"
    assert set(run_.frame.step) == {0, 1, 3}
