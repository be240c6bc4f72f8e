"""Paired differences between two schemes run on the same seeds."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .uncertainty import Interval, mean_ci

__all__ = ["paired_ci", "sign_string"]


def paired_ci(treatment: Sequence[float], control: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of the per-seed differences d_i = treatment_i - control_i with the paired Student-t
    interval dbar +- t_{(1+level)/2, n-1} s_d / sqrt(n), s_d the unbiased standard deviation of the
    differences (the seed's shared variation cancels in d_i)."""
    a, b = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_ci needs two 1-D sequences of equal length, got shapes {a.shape} and {b.shape}")
    return mean_ci(a - b, level)


def sign_string(differences: Sequence[float], tol: float = 0.0) -> str:
    """Per-seed signs of ``differences`` in seed order: "+" above ``tol``, "-" below ``-tol``, "0"
    within it, "?" when not finite; separated by spaces (e.g. "+ + + - +")."""
    out = []
    for d in np.asarray(differences, dtype=np.float64):
        out.append("?" if not np.isfinite(d) else "+" if d > tol else "-" if d < -tol else "0")
    return " ".join(out)
