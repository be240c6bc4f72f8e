import pandas as pd
import pytest

from varprobe.analysis import transmission_ratios


def _row(layer, depth, q, v, step=0):
    return {"step": step, "layer": layer, "depth": depth, "mode": "train", "module_type": "Conv2d", "quantity": q,
            "value": v}


def test_ratios_are_out_over_in_and_grad_in_over_grad_out():
    rows = [_row("a", 0, "in.var", 1.0), _row("a", 0, "out.var", 2.0), _row("a", 0, "grad_out.var", 4.0),
            _row("b", 1, "in.var", 2.0), _row("b", 1, "out.var", 3.0), _row("b", 1, "grad_in.var", 4.0),
            _row("b", 1, "grad_out.var", 8.0), _row("b", 1, "out.var", 9.0, step=5)]
    r = transmission_ratios(pd.DataFrame(rows)).set_index(["step", "layer", "quantity"])["value"]
    assert r[(0, "a", "fwd.var_ratio")] == pytest.approx(2.0)
    assert (0, "a", "bwd.var_ratio") not in r  # the first layer's input needs no gradient
    assert r[(0, "b", "fwd.var_ratio")] == pytest.approx(1.5)
    assert r[(0, "b", "bwd.var_ratio")] == pytest.approx(0.5)
    assert (5, "b", "fwd.var_ratio") not in r  # no in.var at step 5: no ratio
