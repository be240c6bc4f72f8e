"""The figure band (Student-t interval of the mean over seeds) and the log-axis tick labels."""
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.backends.backend_agg import FigureCanvasAgg

from varprobe.plot.lines import mean_band
from varprobe.plot.style import tidy_log


def _t975(df: int) -> float:
    """t_{0.975, df} in closed form (Shaw 2006), independent of scipy, which the code under test uses."""
    u = 0.975
    a = 4 * u * (1 - u)
    if df == 2:
        return (2 * u - 1) / math.sqrt(2 * u * (1 - u))
    if df == 4:
        return 2 * math.sqrt(math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a) - 1)
    raise ValueError(df)


def test_mean_band_is_the_student_t_interval_of_the_mean():
    for v in ([1.0, 2.0, 4.0], [0.3, -1.2, 2.5, 7.0, 1.1]):
        x = np.array(v, dtype=np.float64)
        n = x.size
        s = math.sqrt(sum((a - x.mean()) ** 2 for a in x) / (n - 1))
        half = _t975(n - 1) * s / math.sqrt(n)
        lo, hi = mean_band(v)
        assert math.isclose(lo, x.mean() - half, rel_tol=1e-12)
        assert math.isclose(hi, x.mean() + half, rel_tol=1e-12)


def test_mean_band_of_one_value_is_no_band():
    lo, hi = mean_band([3.0])
    assert math.isnan(lo) and math.isnan(hi)


def _labels(lo: float, hi: float) -> list[str]:
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([lo, hi], [lo, hi])
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    tidy_log(ax)
    fig.canvas.draw()
    return [t.get_text() for t in ax.get_yticklabels(minor=False) + ax.get_yticklabels(minor=True)
            if t.get_text()]


def test_tidy_log_writes_plain_numbers_on_short_ranges_and_powers_on_long_ones():
    short = _labels(2.0, 50.0)
    assert {"2", "5", "10", "20", "50"} <= set(short), short
    assert not any("10^" in t or "times" in t for t in short), short
    long = _labels(1e-3, 1e3)
    assert long and all("10^" in t for t in long), long


def _seeds(*values: float):
    import pandas as pd
    rows = [{"run": f"r{seed}", "scheme": "plain", "seed": seed, "step": step, "value": v}
            for seed, v in enumerate(values) for step in (0, 1, 2)]
    return pd.DataFrame(rows)


def test_log_axis_lines_are_geometric_means_with_the_t_interval_of_the_logs():
    from matplotlib.collections import PolyCollection

    from varprobe.plot.lines import Lines

    data = _seeds(2.0, 4.0, 8.0)
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    Lines(data, "scheme", None).draw(ax, data, "step", log=True)
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [4.0, 4.0, 4.0], rtol=1e-12)  # (2 * 4 * 8) ** (1/3)
    # logs: ln 2 x (1, 2, 3), unbiased s = ln 2; interval exp(ln 4 -+ t_{0.975, 2} ln 2 / sqrt 3)
    half = _t975(2) * math.log(2) / math.sqrt(3)
    band = next(c for c in ax.collections if isinstance(c, PolyCollection)).get_paths()[0].vertices[:, 1]
    np.testing.assert_allclose([band.min(), band.max()], [4 * math.exp(-half), 4 * math.exp(half)], rtol=1e-9)


def test_linear_axis_lines_are_arithmetic_means():
    from varprobe.plot.lines import Lines

    data = _seeds(1.0, 100.0)
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    Lines(data, "scheme", None).draw(ax, data, "step")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [50.5, 50.5, 50.5], rtol=1e-12)


def test_spp_caption_reports_the_geometric_mean_the_figure_draws():
    import pandas as pd

    from varprobe.plot.captions import caption_spp

    rows = []
    for seed, scale in ((0, 1.0), (1, 4.0)):
        for step in (0, 10):
            for depth, layer in enumerate(("a", "b")):
                for q, v in (("out.ch_var", scale * (depth + 1) * (1 + step)), ("out.ch_sq_mean", 0.1)):
                    rows.append({"run": f"r{seed}", "scheme": "plain", "seed": seed, "lr": 0.1, "step": step,
                                 "layer": layer, "depth": depth, "mode": "train", "module_type": "Conv2d",
                                 "quantity": q, "value": v})
    text = caption_spp(pd.DataFrame(rows))
    # largest over depth: depth 1, values 2 and 8 at step 0 (geometric mean 4), 22 and 88 at step 10 (44)
    assert "geometric mean over seeds" in text and "plain 4 -> 44" in text, text


def test_shift_markers_sit_on_their_lines_with_two_settings_and_a_log_axis():
    import pandas as pd

    import varprobe.plot as vp

    rows = []
    for lr, scale, power in ((0.05, 1.0, 0.2), (0.5, 50.0, 2.0)):
        for seed, f in ((0, 1.0), (1, 4.0)):
            for step in range(0, 40, 5):
                for q, v in (("gw.shift_ratio", 2.0 * f * scale), ("w.filter_sum_var", f * (1 + step) ** power)):
                    rows.append({"run": f"lr{lr}-s{seed}", "scheme": "plain", "lr": lr, "seed": seed, "step": step,
                                 "layer": "c1", "depth": 0, "mode": "train", "module_type": "Conv2d",
                                 "quantity": q, "value": v})
    fig = vp.shift(pd.DataFrame(rows))
    for ax in fig.axes[:2]:
        curves = [ln for ln in ax.lines if ln.get_linestyle() not in ("None", "none") and len(ln.get_xdata()) > 2]
        marks = [ln for ln in ax.lines if ln.get_linestyle() in ("None", "none") and len(ln.get_xdata())]
        assert curves and marks
        for m in marks:
            for x, y in zip(m.get_xdata(), m.get_ydata()):
                on = [c for c in curves if any(abs(cx - x) < 1e-9 and abs(cy / y - 1) < 1e-9
                                               for cx, cy in zip(c.get_xdata(), c.get_ydata()))]
                assert on, (ax.get_title(), x, y)
