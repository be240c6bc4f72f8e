"""The footer of every figure: what it was drawn from (model, data, schemes, lr, seeds, steps),
read from the run metadata columns of the frame it shows."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .style import FOOTNOTE_SIZE, _wrap, order_levels, pack

__all__ = ["describe", "footer"]


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _values(col) -> list:
    """Distinct non-missing values of a column, sorted where they compare (numbers), else in
    order of first appearance."""
    vals = [v for v in dict.fromkeys(col.tolist()) if v is not None and v == v]
    try:
        return sorted(vals)
    except TypeError:
        return vals


def describe(frame, mode: str | None = None) -> str:
    """What a figure was drawn from, in one line, read from the run metadata columns of ``frame``
    (the config columns ``varprobe.load_runs`` adds: model, data, size, channels, batch_size,
    scheme, lr, seed, steps; ``run``; ``step``): e.g. "resnet8 on digits 8 px, batch 64 · schemes
    plain, bn, pws · lr 0.2 · 3 seeds (0–2) · steps 0–145 recorded (of 150) · 9 runs · train mode".
    A column that is absent is left out; a value that differs between runs is listed. Works on
    long probe tables and on one-row-per-run tables alike."""
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        return ""
    cols = frame.columns
    runs = frame.drop_duplicates("run") if "run" in cols else frame
    parts = []

    def one(col, fmt="{}"):
        if col not in cols:
            return None
        vals = _values(runs[col])
        return ", ".join(fmt.format(_fmt(v)) for v in vals) if vals else None
    what = one("model")
    data = one("data")
    if data:
        size = one("size", "{} px")
        ch = one("channels", "x {} channels")
        data = " ".join(x for x in (data, size, ch) if x)
        what = f"{what} on {data}" if what else data
    batch = one("batch_size")
    if batch:
        what = f"{what}, batch {batch}" if what else f"batch {batch}"
    if what:
        parts.append(what)
    if "scheme" in cols:
        schemes = order_levels(runs["scheme"])
        parts.append(("scheme " if len(schemes) == 1 else "schemes ") + ", ".join(schemes))
    if "control" in cols:
        parts.append("controls " + ", ".join(dict.fromkeys(runs["control"].astype(str))))
    lr = one("lr")
    if lr:
        parts.append(f"lr {lr}")
    if "seed" in cols:
        seeds = [int(s) for s in _values(runs["seed"])]
        if len(seeds) == 1:
            parts.append(f"seed {seeds[0]}")
        else:
            span = (f"{seeds[0]}–{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1))
                    else ", ".join(map(str, seeds)))
            parts.append(f"{len(seeds)} seeds ({span})")
    if "step" in cols and len(frame):
        lo, hi = int(frame["step"].min()), int(frame["step"].max())
        planned = one("steps")
        parts.append(f"steps {lo}–{hi} recorded" + (f" (of {planned})" if planned else ""))
    elif "steps" in cols:
        parts.append(f"{one('steps')} steps")
    if "run" in cols:
        n = runs["run"].nunique()
        parts.append(f"{n} run" + ("s" if n != 1 else ""))
    if mode:
        parts.append(f"{mode} mode")
    return " · ".join(parts)


def footer(fig, frame, text: str = "", *, mode: str | None = None) -> None:
    """The figure's footer, outside the panels, lower left: ``describe(frame)`` (what the figure
    was drawn from; ``frame`` may also be that line itself), wrapped to the figure's width, then
    ``text`` (a note on what was left out or how to read the figure) on its own line."""
    what = frame if isinstance(frame, str) else describe(frame, mode)
    width = max(40, int(fig.get_size_inches()[0] * 15))
    packed = pack(what.split(" · "), width, " · ") if what else [""]  # break between parts, never inside one
    lines = ["\n".join(packed), _wrap(text, width) if text else ""]
    body = "\n".join(x for x in lines if x)
    if body:
        fig.supxlabel(body, fontsize=FOOTNOTE_SIZE, color="#555555", x=0.0, ha="left", multialignment="left")
