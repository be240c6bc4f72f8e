"""The width-sweep rows (W1-W4): the "slopes" kind against an independent float64 reference on
small synthetic slope tables (a row holds when every layer's interval lies inside the band, does not
hold when one lies wholly outside), its fragility against a brute-force leave-one-out, and a tiny
sweep part end to end (each row's per-seed slopes against a least-squares fit of the runs' own
frames, the figure and its caption)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from varprobe.claims import CLAIMS, PROFILES, rows
from varprobe.claims.fragility import fragility
from varprobe.claims.measures import Evidence
from varprobe.claims.profiles import SweepPart
from varprobe.claims.summary import summarize
from varprobe.claims.widths import FIGURE, SWEEP_DIR, run_sweep, sweep_configs, sweep_figure
from varprobe.record import load_run
from varprobe.record.files import OutputDir

BAND = 0.25


def _ref_interval(x) -> tuple[float, float, float]:
    """mean and Student-t 95% interval of one layer's per-seed slopes, in float64."""
    x = np.asarray(x, dtype=np.float64)
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return x.mean(), x.mean() - half, x.mean() + half


def _ref_verdict(table: list[dict], direction: str, band: float = BAND) -> str:
    """Every layer's interval inside (-band, band) ('<') or above band ('>'): holds; one wholly
    outside (at or beyond +-band; '>': one at or below band): does not hold; else inconclusive."""
    cis = [_ref_interval([seed[k] for seed in table]) for k in table[0]]
    if direction == "<":
        if all(-band < lo and hi < band for _, lo, hi in cis):
            return "holds"
        if any(lo >= band or hi <= -band for _, lo, hi in cis):
            return "does not hold"
    else:
        if all(lo > band for _, lo, _ in cis):
            return "holds"
        if any(hi <= band for _, _, hi in cis):
            return "does not hold"
    return "inconclusive"


def _table(means: dict[str, float], spread: float, seeds: int, rng) -> list[dict]:
    return [{k: m + spread * rng.standard_normal() for k, m in means.items()} for _ in range(seeds)]


@pytest.mark.parametrize("direction", ["<", ">"])
def test_the_slopes_kind_matches_an_independent_reference_on_synthetic_tables(direction):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        layers = int(rng.integers(1, 5))
        means = {f"conv{i}": float(rng.uniform(-0.8, 0.8)) for i in range(layers)}
        table = _table(means, float(rng.uniform(0.01, 0.4)), int(rng.integers(2, 9)), rng)
        s = summarize("slopes", table, direction, BAND)
        want = _ref_verdict(table, direction)
        assert s.verdict == want, (table, s.shown)
        seen.add(want)
        cis = [_ref_interval([seed[k] for seed in table]) for k in means]
        if direction == "<":
            assert s.interval.high == pytest.approx(max(max(abs(lo), abs(hi)) for _, lo, hi in cis), rel=1e-9)
            assert s.per_seed == pytest.approx([max(abs(v) for v in seed.values()) for seed in table])
        else:
            assert s.interval.low == pytest.approx(min(lo for _, lo, _ in cis), rel=1e-9, abs=1e-12)
            assert s.per_seed == pytest.approx([min(seed.values()) for seed in table])
        assert s.interval.n == len(table)
    assert seen == {"holds", "does not hold", "inconclusive"}


def test_a_row_holds_only_when_every_conv_is_inside_the_band():
    inside = [{"a": 0.01, "b": -0.02}, {"a": 0.03, "b": 0.0}, {"a": -0.01, "b": 0.02}]
    assert summarize("slopes", inside, "<", BAND).verdict == "holds"
    one_grows = [{**s, "c": 1.0 + 0.01 * i} for i, s in enumerate(inside)]  # c's interval near 1
    s = summarize("slopes", one_grows, "<", BAND)
    assert s.verdict == "does not hold" and "farthest from 0: c +1.01" in s.shown
    wide = [{**s, "c": v} for s, v in zip(inside, (-0.3, 0.0, 0.3))]  # c straddles the band
    assert summarize("slopes", wide, "<", BAND).verdict == "inconclusive"
    grows = [{"a": 0.5, "b": 0.6}, {"a": 0.55, "b": 0.52}, {"a": 0.48, "b": 0.58}]
    assert summarize("slopes", grows, ">", BAND).verdict == "holds"
    assert summarize("slopes", [{**s, "c": 0.0} for s in grows], ">", BAND).verdict == "does not hold"


def test_a_seed_without_slopes_or_a_layer_missing_at_a_seed_leaves_the_row_inconclusive():
    table = [{"a": 0.01}, {"a": 0.02}, math.nan]  # a measure that raised gives nan for its seed
    s = summarize("slopes", table, "<", BAND)
    assert s.verdict == "inconclusive" and "no interval: a" in s.shown
    s = summarize("slopes", [{"a": 0.0, "b": 0.01}, {"a": 0.01}, {"a": 0.02, "b": 0.0}], "<", BAND)
    assert s.verdict == "inconclusive" and "no interval: b" in s.shown


def test_fragility_of_a_slopes_row_is_the_brute_force_leave_one_out():
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(200):
        table = _table({"a": float(rng.uniform(-0.3, 0.3)), "b": float(rng.uniform(-0.3, 0.3))},
                       float(rng.uniform(0.01, 0.15)), int(rng.integers(3, 7)), rng)
        v = summarize("slopes", table, "<", BAND).verdict
        f = fragility("slopes", table, "<", BAND, v)
        if v == "inconclusive":
            assert f is None
            continue
        want = tuple(_ref_verdict(table[:i] + table[i + 1:], "<") for i in range(len(table)))
        assert f.left_out == want and f.fragile == any(w != v for w in want)
        checked += 1
    assert checked > 20


def test_sweep_rows_only_where_the_profile_has_a_sweep_part():
    tiny = PROFILES["tiny"]
    assert not [r for r in rows(tiny) if r[0].at == "sweep"] and sweep_configs(tiny) == []
    ids = [r[1] for r in rows(PROFILES["quick"]) if r[0].at == "sweep"]
    assert ids == ["W1", "W2", "W3", "W4"] and all(c.kind == "slopes" for c in CLAIMS if c.id in ids)
    assert PROFILES["quick"].sweep.seeds >= 8 and PROFILES["standard"].sweep is not None
    with pytest.raises(ValueError, match="width 8 is given more than once"):
        SweepPart(widths=(8, 8), seeds=3)
    with pytest.raises(ValueError, match="seeds >= 2"):
        SweepPart(widths=(8, 16), seeds=1)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("widths")
    p = replace(PROFILES["tiny"], sweep=SweepPart(widths=(4, 8, 16), seeds=2))
    threads = torch.get_num_threads()
    try:
        result = run_sweep(p, out, progress=False, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    ev = Evidence(p, {}, torch.zeros(1))
    ev.sweeps["sweep"] = result
    return p, out, ev


def _ref_slopes(out, quantity: str, step: int, seed: int) -> dict[str, float]:
    """Per layer, np.polyfit of log value on log width over the runs of ``seed`` read from disk."""
    points: dict[str, list] = {}
    for d in sorted((out / SWEEP_DIR / "runs").iterdir()):
        r = load_run(d)
        if r.config["seed"] != seed:
            continue
        f = r.frame
        f = f[(f["quantity"] == quantity) & (f["step"] == step) & (f["mode"] == "train") & (f["layer"] != "")]
        for layer, value in zip(f["layer"], f["value"]):
            points.setdefault(layer, []).append((r.config["width"], value))
    return {k: np.polyfit(*np.log(np.array(v, dtype=np.float64)).T, 1)[0] for k, v in points.items()}


def test_each_sweep_row_reads_the_runs_own_slopes(swept):
    p, out, ev = swept
    claims = {c.id: c for c in CLAIMS if c.at == "sweep"}
    convs = ["features.0.conv", "features.2.conv", "features.5.conv", "features.7.conv", "features.10.conv"]
    for seed in range(2):
        init, update = _ref_slopes(out, "out.sq_mean", 0, seed), _ref_slopes(out, "w.update_ratio", 1, seed)
        w1 = claims["W1"].measure(ev, seed, None)
        assert list(w1) == convs and list(w1.values()) == pytest.approx([init[k] for k in convs], abs=1e-9)
        assert claims["W2"].measure(ev, seed, None) == pytest.approx({"head": init["head"] - 1.0}, abs=1e-9)
        w3 = claims["W3"].measure(ev, seed, None)
        assert list(w3) == convs[1:] and list(w3.values()) == pytest.approx([update[k] for k in convs[1:]], abs=1e-9)
        assert claims["W4"].measure(ev, seed, None) == pytest.approx({"head": update["head"]}, abs=1e-9)
    values = [claims["W1"].measure(ev, s, None) for s in range(2)]
    assert summarize("slopes", values, "<", BAND).interval.n == 2


def test_the_report_draws_the_sweep_figure_with_a_computed_caption(swept):
    p, out, ev = swept
    captions = sweep_figure(ev, OutputDir(out / "report", "report"))
    assert list(captions) == [FIGURE] and (out / "report" / FIGURE).stat().st_size > 1000
    assert "out.sq_mean at step 0" in captions[FIGURE] and "w.update_ratio at step 1" in captions[FIGURE]
    assert sweep_figure(Evidence(p, {}, torch.zeros(1)), OutputDir(out / "none", "report")) == {}
