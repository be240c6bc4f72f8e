"""Conv-row predicates and the pooled share of a decomposition part, against sums computed here."""
import math

import numpy as np
import pandas as pd
import pytest

from varprobe.analysis.rows import conv_rows, is_conv, is_weight_layer, pooled_shares


def test_predicates_read_the_module_type_in_any_case():
    types = pd.Series(["Conv2d", "PWSConv2d", "Conv1D", "Linear", "BatchNorm2d", "ResidualBlock", ""])
    assert is_conv(types).tolist() == [True, True, True, False, False, False, False]
    assert is_weight_layer(types).tolist() == [True, True, True, True, False, False, False]
    frame = pd.DataFrame({"module_type": types, "value": range(7)})
    assert conv_rows(frame)["value"].tolist() == [0, 1, 2]
    assert len(conv_rows(frame.drop(columns="module_type"))) == 7


def _rows(values):
    """values: {(step, layer, depth, module_type): {quantity: value}}"""
    return pd.DataFrame([{"step": s, "layer": la, "depth": dp, "module_type": mt, "mode": "train",
                          "quantity": q, "value": v}
                         for (s, la, dp, mt), qs in values.items() for q, v in qs.items()])


def test_pooled_shares_are_ratios_of_sums_over_conv_layers_after_the_first():
    v = {(0, "c0", 0, "Conv2d"): {"dec.measured": 100.0, "dec.shift": 99.0},   # depth 0: left out
         (0, "c1", 1, "Conv2d"): {"dec.measured": 2.0, "dec.shift": 1.0},
         (0, "c2", 2, "PWSConv2d"): {"dec.measured": 6.0, "dec.shift": 0.5},
         (0, "fc", 3, "Linear"): {"dec.measured": 9.0, "dec.shift": 9.0},      # not a conv: left out
         (1, "c1", 1, "Conv2d"): {"dec.measured": 4.0, "dec.shift": 3.0},
         (1, "c2", 2, "PWSConv2d"): {"dec.measured": math.nan, "dec.shift": 1.0}}  # not finite: left out
    got = pooled_shares(_rows(v), ["dec.shift"]).set_index("step")
    np.testing.assert_allclose(got.loc[0, "share"], (1.0 + 0.5) / (2.0 + 6.0), rtol=1e-15)
    np.testing.assert_allclose(got.loc[0, "measured"], (2.0 + 6.0) / 2, rtol=1e-15)
    np.testing.assert_allclose(got.loc[1, "share"], 3.0 / 4.0, rtol=1e-15)
    assert set(got["part"]) == {"dec.shift"}


def test_pooled_shares_name_what_is_missing():
    with pytest.raises(ValueError, match="no dec.* rows"):
        pooled_shares(_rows({(0, "fc", 1, "Linear"): {"dec.measured": 1.0}}), ["dec.shift"])
    with pytest.raises(ValueError, match="lacks dec.shift"):
        pooled_shares(_rows({(0, "c1", 1, "Conv2d"): {"dec.measured": 1.0}}), ["dec.shift"])
