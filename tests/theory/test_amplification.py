"""varprobe.theory.amplification: the paper-notes 1.3 table and Monte Carlo over weight draws.

MC checks allow Z = 5 standard errors (std(ddof=1) / sqrt(N)); sample sizes and seeds are fixed.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from varprobe.theory import (
    Split,
    relu_gaussian_moments,
    second_moment_split,
    shift_amplification,
    shift_weight_norm_change,
    shifted_filter_split,
)

Z = 5.0
RELU = relu_gaussian_moments(1.0)  # mu^2 = 1/(2 pi) ~= 0.159, E[x^2] = 0.5
MU2, EX2 = RELU.mean**2, RELU.sq_mean

# paper-notes 1.3: (n, kappa) -> factor, printed to 3 significant digits
NOTES_TABLE = {(27, 0.1): "1.09", (147, 0.1): "1.47", (576, 0.1): "2.83", (1152, 0.1): "4.67",
               (4608, 0.1): "15.7", (576, 0.2): "8.3"}


def mc_mean(samples: np.ndarray) -> tuple[float, float]:
    return float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(samples.shape[0]))


def printed(value: float, like: str) -> str:
    """``value`` rounded to as many decimals as the printed entry ``like``."""
    return f"{value:.{len(like.split('.')[1])}f}"


# ----------------------------------------------------------------------------------------------
# the notes' table
# ----------------------------------------------------------------------------------------------
def test_notes_table_reproduced_by_shift_term_growth():
    """The table is 1 + kappa^2 n mu^2 / E[x^2] (growth of the shift term only), to the printed digits."""
    for (n, kappa), entry in NOTES_TABLE.items():
        factor = shift_amplification(n, kappa, MU2, EX2, include_norm_growth=False)
        assert printed(factor, entry) == entry, (n, kappa, factor)


def test_exact_factor_against_notes_table():
    """The exact expectation adds kappa^2 sigma^2 / E[x^2] (0.0068 at kappa = 0.1): 4 of 6 entries print
    the same, n = 576 prints 2.84 (table 2.83) and kappa = 0.2 prints 8.4 (table 8.3)."""
    exact = {key: shift_amplification(*key, MU2, EX2) for key in NOTES_TABLE}
    differ = {key for key, entry in NOTES_TABLE.items() if printed(exact[key], entry) != entry}
    assert differ == {(576, 0.1), (576, 0.2)}
    assert printed(exact[(576, 0.1)], "2.83") == "2.84"
    assert printed(exact[(576, 0.2)], "8.3") == "8.4"
    for key, entry in NOTES_TABLE.items():  # rounded, never more than one unit of the last digit higher
        unit = 10.0 ** -len(entry.split(".")[1])
        off_by = float(printed(exact[key], entry)) - float(entry)
        assert off_by == pytest.approx(unit if key in differ else 0.0)
        shift_only = shift_amplification(*key, MU2, EX2, include_norm_growth=False)
        assert exact[key] - shift_only == pytest.approx(key[1] ** 2 * (EX2 - MU2) / EX2, rel=1e-12)


def test_closed_form_structure():
    assert shift_amplification(576, 0.0, MU2, EX2) == 1.0
    assert shift_amplification(576, 0.3, 0.0, EX2) == pytest.approx(1 + 0.09, rel=1e-15)  # zero-mean inputs
    ns = np.array([27, 28, 29, 576])
    a = shift_amplification(ns, 0.1, MU2, EX2)
    assert isinstance(a, np.ndarray) and a.shape == (4,)
    np.testing.assert_allclose(np.diff(a[:3]), 0.01 * MU2 / EX2, rtol=1e-10)  # linear in n
    expected = 1 + 0.01 + 0.01 * (ns - 1) * MU2 / EX2
    np.testing.assert_allclose(a, expected, rtol=1e-14)
    split = shifted_filter_split(ns, 0.1, MU2, EX2)
    np.testing.assert_allclose(split.total / (2 * EX2), a, rtol=1e-14)
    he = shifted_filter_split(27, 0.0, MU2, EX2)
    assert he.total == pytest.approx(2 * EX2, rel=1e-15)  # kappa = 0: He's 2 E[x^2]
    for bad in ((0, 0.1, MU2, EX2), (27, 0.1, 0.6, 0.5), (27, 0.1, -0.1, 0.5), (27, 0.1, 0.0, 0.0)):
        with pytest.raises(ValueError):
            shift_amplification(*bad)


# ----------------------------------------------------------------------------------------------
# Monte Carlo over weight draws (inner expectation over x exact)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,kappa,n_filters", [(27, 0.1, 40_000), (147, 0.1, 20_000), (576, 0.2, 8_000)])
def test_expected_split_after_shift_matches_mc_over_weights(n, kappa, n_filters):
    rng = np.random.default_rng(1000 + n)
    W = rng.normal(0.0, math.sqrt(2.0 / n), size=(n_filters, n))
    delta = kappa * math.sqrt(2.0 / n)
    before = second_moment_split(W, RELU.mean, RELU.var)
    after = second_moment_split(W + delta, RELU.mean, RELU.var)
    theory = shifted_filter_split(n, kappa, MU2, EX2)
    assert isinstance(theory, Split)

    est, se = mc_mean(before.total)
    assert abs(est - 2 * EX2) <= Z * se
    for name in ("zero_mean", "shift", "total"):
        est, se = mc_mean(getattr(after, name))
        assert abs(est - getattr(theory, name)) <= Z * se, (name, est, getattr(theory, name), se)
    # factor = E[after] / (2 E[x^2]), the denominator being exact
    est, se = mc_mean(after.total / (2 * EX2))
    assert abs(est - shift_amplification(n, kappa, MU2, EX2)) <= Z * se


def test_mc_separates_exact_factor_from_shift_only_approximation():
    """At n = 27, kappa = 1 the zero-mean growth is large enough to be seen: MC agrees with the exact
    factor and rejects the shift-only approximation."""
    n, kappa, n_filters = 27, 1.0, 40_000
    rng = np.random.default_rng(77)
    W = rng.normal(0.0, math.sqrt(2.0 / n), size=(n_filters, n)) + kappa * math.sqrt(2.0 / n)
    est, se = mc_mean(second_moment_split(W, RELU.mean, RELU.var).total / (2 * EX2))
    exact = shift_amplification(n, kappa, MU2, EX2)
    approx = shift_amplification(n, kappa, MU2, EX2, include_norm_growth=False)
    assert abs(est - exact) <= Z * se
    assert abs(est - approx) > 4 * Z * se  # ~36 standard errors apart


def test_amplification_matches_mc_over_weights_and_inputs_jointly():
    """Fresh weights and fresh ReLU(N(0,1)) inputs for every sample: nothing computed by the package."""
    n, kappa, n_draws = 27, 0.5, 200_000
    rng = np.random.default_rng(4321)
    w = rng.normal(0.0, math.sqrt(2.0 / n), size=(n_draws, n)) + kappa * math.sqrt(2.0 / n)
    x = np.maximum(rng.normal(size=(n_draws, n)), 0.0)
    y2 = np.einsum("ij,ij->i", w, x) ** 2
    est, se = mc_mean(y2 / (2 * EX2))
    assert abs(est - shift_amplification(n, kappa, MU2, EX2)) <= Z * se


def test_weight_norm_change_matches_mc():
    assert shift_weight_norm_change(0.1) == pytest.approx(0.01, rel=1e-15)
    assert shift_weight_norm_change(0.2) == pytest.approx(0.04, rel=1e-15)
    np.testing.assert_allclose(shift_weight_norm_change(np.array([0.1, 0.2])), [0.01, 0.04], rtol=1e-15)
    rng = np.random.default_rng(8)
    for n, kappa in ((27, 0.2), (576, 0.1)):
        W = rng.normal(0.0, math.sqrt(2.0 / n), size=(20_000, n))
        shifted_sq = ((W + kappa * math.sqrt(2.0 / n)) ** 2).sum(axis=1)
        est, se = mc_mean(shifted_sq / 2.0)  # E||w||^2 = 2 exactly at He init
        assert abs(est - (1 + shift_weight_norm_change(kappa))) <= Z * se
        # independent of n: the expected relative change is kappa^2
        est, se = mc_mean((W**2).sum(axis=1) / 2.0)
        assert abs(est - 1.0) <= Z * se
