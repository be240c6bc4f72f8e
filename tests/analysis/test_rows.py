"""Conv-row predicates and the pooled share of a decomposition part, against sums computed here."""
import math

import numpy as np
import pandas as pd
import pytest

from varprobe.analysis.rows import (CONV_ROLES, THEORY_ROLES, WEIGHT_ROLES, conv_rows, is_conv, is_weight_layer,
                                    pooled_shares, roles, weight_rows)
from varprobe.vocabulary import ROLES


def test_layers_are_selected_by_role_not_by_the_type_name():
    # a Hugging Face ConvNeXt's ConvNextLayerNorm has "Conv" in its name and is a norm; GPT-2's Conv1D is linear
    frame = pd.DataFrame({"module_type": ["Conv2d", "PWSConv2d", "ConvNextLayerNorm", "Conv1D", "ConvTranspose2d",
                                          "Linear", "MultiheadAttention", "BatchNorm2d", "ResidualBlock", ""],
                          "role": ["conv", "conv", "norm", "linear", "conv_transpose", "linear", "attention", "norm",
                                   "block", ""],
                          "value": range(10)})
    assert is_conv(frame).tolist() == [True, True] + [False] * 8
    assert is_weight_layer(frame).tolist() == [True, True, False, True, True, True, True, False, False, False]
    assert conv_rows(frame)["value"].tolist() == [0, 1]
    assert weight_rows(frame)["value"].tolist() == [0, 1, 3, 4, 5, 6]
    assert set(CONV_ROLES) < set(WEIGHT_ROLES) <= set(ROLES) and set(THEORY_ROLES) <= set(WEIGHT_ROLES)
    assert "norm" not in WEIGHT_ROLES and "block" not in WEIGHT_ROLES


def test_a_frame_without_roles_gets_them_from_the_exact_type_table():
    frame = pd.DataFrame({"layer": ["c", "n", "x", "b", ""],
                          "module_type": ["Conv2d", "ConvNextLayerNorm", "MyConvThing", "ResidualBlock", ""],
                          "quantity": ["out.var", "out.var", "out.var", "block.out.var", "loss"]})
    assert roles(frame).tolist() == ["conv", "other", "other", "block", ""]
    assert conv_rows(frame)["layer"].tolist() == ["c"]
    with pytest.raises(ValueError, match="neither a 'role' nor a 'module_type'") as err:
        conv_rows(frame.drop(columns="module_type"))
    assert "\n" not in str(err.value)


def _rows(values):
    """values: {(step, layer, depth, module_type): {quantity: value}}; role from the type (exact)."""
    role = {"Conv2d": "conv", "PWSConv2d": "conv", "Linear": "linear", "ConvNextLayerNorm": "norm"}
    return pd.DataFrame([{"step": s, "layer": la, "depth": dp, "module_type": mt, "role": role[mt], "mode": "train",
                          "quantity": q, "value": v}
                         for (s, la, dp, mt), qs in values.items() for q, v in qs.items()])


def test_pooled_shares_are_ratios_of_sums_over_conv_layers_after_the_first():
    v = {(0, "c0", 0, "Conv2d"): {"dec.measured": 100.0, "dec.shift": 99.0},   # depth 0: left out
         (0, "c1", 1, "Conv2d"): {"dec.measured": 2.0, "dec.shift": 1.0},
         (0, "c2", 2, "PWSConv2d"): {"dec.measured": 6.0, "dec.shift": 0.5},
         (0, "fc", 3, "Linear"): {"dec.measured": 9.0, "dec.shift": 9.0},      # not a conv: left out
         (0, "ln", 2, "ConvNextLayerNorm"): {"dec.measured": 7.0, "dec.shift": 7.0},  # a norm: left out
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
