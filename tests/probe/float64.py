"""Float64 references shared by the probe tests on other people's models: computed from the
tensors a test's own hooks saw, never from varprobe."""
from __future__ import annotations

import pandas as pd
import torch


def biased_var(t: torch.Tensor) -> float:
    """Biased variance of every element of ``t``: mean((t - mean(t))²), in ``t``'s dtype."""
    return float(((t - t.mean()) ** 2).mean())


def shift_ratio(grad: torch.Tensor, layout: str = "rows") -> float:
    """mean over filters of |mean of the filter's gradient| / (rms of the gradient / sqrt(fan)), in
    float64. Filters are rows of ``grad`` flattened from axis 1, or for ``layout="transposed"`` (a
    transposed conv's ``[in, out, *k]``) rows of its axis-0/1 transpose."""
    g = grad.detach().to(torch.float64)
    f = (g.transpose(0, 1) if layout == "transposed" else g).flatten(1)
    return float(f.mean(1).abs().mean() / (f.square().mean().sqrt() / f.shape[1] ** 0.5))


def value(frame: pd.DataFrame, layer: str, quantity: str) -> float:
    """The one value of ``layer`` and ``quantity`` in a probe frame (asserts there is exactly one)."""
    v = frame.loc[(frame["layer"] == layer) & (frame["quantity"] == quantity), "value"]
    assert len(v) == 1, (layer, quantity, len(v))
    return float(v.iloc[0])
