"""The report of ``reproduce``: the evidence figures, ``claims.md`` and ``claims.json``."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd

from ..record import Run, load_runs
from ..record.files import OutputDir
from .attribution import CONTROLS, causes_report
from .causes import PREDICTORS
from .fragility import RULE, STANDINGS
from .measures import Evidence, accuracy
from .profiles import MAIN_SCHEMES, Profile, accuracy_setting
from .summary import ACROSS_RUNS, KINDS
from .widths import FIGURE as SWEEP_FIGURE, SWEEP_DIR, sweep_figure

if TYPE_CHECKING:
    from .pipeline import Finding

__all__ = ["write_figures", "write_report", "figure_table", "report_files", "outcome_table", "gap_table",
           "predictor_table", "FIGURE_TITLES", "CAPTIONS_FILE",
           "PLANNING_LABEL", "FRAGILITY_LABEL", "numeric_paths"]

PLANNING_LABEL = "seeds to settle (planning, not a rerun rule)"
FRAGILITY_LABEL = "fragility (one seed can change it: **fragile**)"
_DECOMPOSED = ("plain", "plain+proj", "plain+gn", "plain+gn+proj", "centered", "pws")


def _frame(ev: Evidence, labels, lrs=None):
    paths = sorted({str(r.path) for (label, lr, _), r in ev.runs.items()
                    if label in labels and (lrs is None or lr in lrs)})
    return load_runs(paths)


#: What each figure shows, for its caption (the computed numbers follow).
FIGURE_TITLES = {
    "shift.png": "The shift of the average gradient at the small lr.",
    "amplification.png": "Output second moment E[y²] of conv layers over training at the largest lr.",
    "spp-large-lr.png": "Signal propagation over depth at the largest lr.",
    "collapse.png": "Learning rate x scheme: how many seeds collapsed and the final loss.",
    "filter-sums.png": "Mean squared kernel filter sum of WN, centering and PWS at the largest lr.",
    "theory.png": "The i.i.d. variance-transmission prediction of each conv layer against the measurement.",
    "attribution.png": "The attribution controls: final train accuracy.",
    "decomposition.png": "Where conv output variance comes from at the largest lr.",
    "batch.png": "Test accuracy against the mini-batch size (same samples, lr scaled with the batch), per scheme.",
    "train-eval.png": "The largest gap between train-mode and eval-mode outputs of the final model, relative to "
                      "the output, per seed.",
    "predictors.png": "Each predictor of the competing explanation against the outcome it should rank, every run "
                      "at the large lr.",
}
CAPTIONS_FILE = "captions.json"
_TABLES = ("claims.md", "claims.json", CAPTIONS_FILE, "figures.md")


def report_files(p: Profile | None = None) -> tuple[str, ...]:
    """Every file a report of profile ``p`` writes into its directory (checked before a
    ``reproduce`` starts): the sweep's figure only where ``p`` has a sweep part; with no ``p``,
    every file a report of any profile may write."""
    return (*_TABLES, *FIGURE_TITLES, *((SWEEP_FIGURE,) if p is None or p.sweep is not None else ()))


def write_figures(findings: list["Finding"], out: OutputDir, p: Profile, ev: Evidence) -> dict[str, str]:
    """Draw the evidence with ``varprobe.plot`` from the runs, next to claims.md, and list each
    figure in the rows it supports (``Claim.figures``). Figures at a large lr show the largest.

    Each figure's caption is computed by ``varprobe.plot.captions`` from the very frame the
    figure is drawn from, and written to ``out/captions.json`` ({figure: caption}) and
    ``out/figures.md`` (a markdown table of the figures, :func:`figure_table`). Every file goes through
    ``out`` (never over a file varprobe did not write). Returns the captions."""
    from .. import plot  # lazily: matplotlib only when figures are drawn
    from ..record.figure import save_figure
    from ..analysis.compare import compare
    from ..plot import captions as cap

    top = max(p.lrs_large)
    main = _frame(ev, MAIN_SCHEMES)
    small, large = main[main["lr"] == p.lr_small], main[main["lr"] == top]
    frozen = _frame(ev, ("extra:pws-frozen-alpha",))
    decomposed = _frame(ev, [f"ctl:{c}" for c in _DECOMPOSED], (top,))
    outcomes = pd.DataFrame([{"model": p.attribution_model, "data": p.data, "size": p.attribution_size,
                              "steps": p.steps, "control": label[4:], "lr": lr, "seed": seed,
                              "train_accuracy": accuracy(r)}
                             for (label, lr, seed), r in ev.runs.items() if label.startswith("ctl:")])
    collapsed = outcome_table(ev, MAIN_SCHEMES)
    batches = pd.DataFrame([{**_setting_columns(r), "scheme": label.split(":", 1)[1], "seed": seed,
                             "test_accuracy": accuracy(r, "test_accuracy")}
                            for (label, _, seed), r in ev.runs.items() if label.startswith("batch")])
    gaps, limits = gap_table(findings)
    causes = predictor_table(ev, p.lrs_large)
    names = {k: f"{q} (early value)" for k, (_, q) in PREDICTORS.items()}
    amplified = large[large["scheme"].isin(["plain", "bn", "pws"])]
    sums = large[large["scheme"].isin(["wn", "centered", "pws"])]
    theory = pd.concat([small[small["scheme"] == "plain"], frozen])
    figures = {
        "shift.png": (lambda: plot.shift(small), lambda: cap.caption_shift(small)),
        "amplification.png": (lambda: plot.curves(amplified, "out.sq_mean"),
                              lambda: cap.caption_amplification(amplified, "out.sq_mean")),
        "spp-large-lr.png": (lambda: plot.spp(large), lambda: cap.caption_spp(large)),
        "collapse.png": (lambda: plot.collapse_map(collapsed), lambda: cap.caption_collapse(collapsed)),
        "filter-sums.png": (lambda: plot.curves(sums, "k.filter_sum_sq"),
                            lambda: cap.caption_curves(sums, "k.filter_sum_sq")),
        "theory.png": (lambda: plot.draw(theory, "theory"),
                       lambda: cap.caption_theory(compare(theory))),
        "attribution.png": (lambda: plot.result_map(outcomes, title=f"Final train accuracy of the attribution "
                                                    f"controls ({p.attribution_model}): mean [min, max] over seeds"),
                            lambda: cap.caption_attribution(outcomes)),
        "decomposition.png": (lambda: plot.decomposition(decomposed), lambda: cap.caption_decomposition(decomposed)),
        "batch.png": (lambda: plot.per_run(batches, "test_accuracy", "batch_size", title="Test accuracy against "
                                           "the mini-batch size (rows 7a, 7b): each seed a dot, the mean a line"),
                      lambda: cap.caption_per_run(batches, "test_accuracy", "batch_size")),
        "train-eval.png": (lambda: plot.per_run(gaps, "train_eval_gap", "scheme", log=True, thresholds=limits,
                                                title="max |train − eval output| / max |output| of the final model "
                                                      "(rows 8a, 8b)",
                                                ylabel="train_eval_gap: max |f_train − f_eval|\n/ max |f_eval| (log)"),
                           lambda: cap.caption_per_run(gaps, "train_eval_gap", "scheme")),
        "predictors.png": (lambda: plot.predictors(causes, names),
                           lambda: cap.caption_predictors(causes, {k: k for k in names})),
    }
    captions = {}
    for name, (draw, caption) in figures.items():
        save_figure(draw(), name, out)
        captions[name] = f"{FIGURE_TITLES[name]} {caption()}"
    captions.update(sweep_figure(ev, out))
    out.write_text(CAPTIONS_FILE, json.dumps(captions, indent=2, ensure_ascii=False) + "\n")
    out.write_text("figures.md", figure_table(captions, "", profile=p.name))
    for f in findings:
        f.figures = list(f.claim.figures)
    return captions


def _setting_columns(run: Run) -> dict:
    """What a figure's footer says a run was (model, data, size, batch, lr, steps), from its config."""
    return {k: run.config[k] for k in ("model", "data", "size", "batch_size", "lr", "steps") if k in run.config}


def outcome_table(ev: Evidence, labels) -> pd.DataFrame:
    """One row per run of ``labels`` (main schemes): scheme, lr, seed, status, final_loss and
    train_accuracy (NaN where the run has no result), for the collapse figure's two rules."""
    rows = []
    for (label, lr, seed), r in ev.runs.items():
        if label in labels:
            result = r.meta.get("result") or {}
            rows.append({**_setting_columns(r), "run": str(r.path), "scheme": label, "lr": lr, "seed": seed,
                         "status": r.status, "final_loss": float(result.get("final_loss", math.nan)),
                         "train_accuracy": float(result.get("train_accuracy", math.nan))})
    return pd.DataFrame(rows)


def gap_table(findings: list["Finding"]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Rows 8a (pws) and 8b (bn) as one row per seed: scheme, seed, train_eval_gap (the very values
    the rows measured), and their thresholds as label -> value for the figure."""
    rows, limits = [], {}
    for f in findings:
        if f.id in ("8a", "8b"):
            scheme = "pws" if f.id == "8a" else "bn"
            rows += [{"scheme": scheme, "seed": k, "train_eval_gap": v} for k, v in enumerate(f.summary.per_seed)]
            limits[f"{f.id}: {scheme} {f.claim.direction} {f.claim.threshold:g}"] = f.claim.threshold
    return pd.DataFrame(rows, columns=["scheme", "seed", "train_eval_gap"]), limits


def predictor_table(ev: Evidence, lrs) -> pd.DataFrame:
    """The runs the E rows pool (``measures.cause_runs``), one row each: label, lr, seed, the
    predictors' early values and the outcomes (collapse: did not train; growth)."""
    from .measures import cause_runs
    return pd.DataFrame([{**r, "lr": lr, "seed": seed} for lr in lrs for seed in range(ev.profile.seeds)
                         for r in cause_runs(ev, lr, seed)])


def figure_table(captions: dict[str, str], prefix: str = "docs/figures/", profile: str = "quick",
                 others: dict[str, str] | None = None) -> str:
    """The markdown table of figures and their computed captions (the report's ``figures.md``):
    one row per figure, ``| ![name](prefix+file) | caption |``; ``others`` maps a figure to a link
    of the same figure from another profile, appended as "([standard](link))"."""
    rows = [f"| figure ({profile} profile) | what it shows (computed from the figure's runs) |", "|---|---|"]
    for name, text in captions.items():
        extra = f" ([standard profile]({others[name]}))" if others and name in others else ""
        rows.append(f"| ![{Path(name).stem}]({prefix}{name}) | {text.replace('|', '/')}{extra} |")
    return "\n".join(rows) + "\n"


def numeric_paths(runs: Mapping[object, Run]) -> list[dict]:
    """The distinct floating-point paths (``numeric_path`` of meta.json,
    :func:`varprobe.record.meta.numeric_path`) of ``runs``, each run counted once: ``[{"path":
    ..., "runs": n}]``, the most frequent first; ``path`` None for runs written before varprobe
    recorded it."""
    groups: dict[str, list] = {}
    for path, meta in {str(r.path): r.meta for r in runs.values()}.items():
        numeric = meta.get("numeric_path")
        groups.setdefault(json.dumps(numeric, sort_keys=True), [numeric, 0])[1] += 1
    return [{"path": numeric, "runs": n} for numeric, n in sorted(groups.values(), key=lambda g: -g[1])]


def _path_text(numeric: dict | None) -> str:
    if numeric is None:
        return "not recorded (runs written before varprobe recorded it)"
    env = ", ".join(f"{k}={v}" for k, v in numeric.get("env", {}).items()) or "none set"
    isa = numeric.get("cpu_isa")
    return (f"CPU capability {numeric.get('cpu_capability')} on {numeric.get('cpu')} (flags: "
            f"{', '.join(isa) if isa else 'unknown' if isa is None else 'none of note'}), torch {numeric.get('torch')}, "
            f"oneDNN {numeric.get('onednn')} ({'on' if numeric.get('onednn_enabled') else 'off'}), BLAS "
            f"{numeric.get('blas')} ({numeric.get('blas_library')}), {numeric.get('threads')} thread(s) and "
            f"{numeric.get('interop_threads')} interop thread(s), deterministic algorithms "
            f"{'on' if numeric.get('deterministic') else 'off'}, environment: {env}")


def _numeric_text(paths: list[dict]) -> str:
    if not paths:
        return ""
    if len(paths) == 1:
        return (f"Floating-point path (the same in every run's meta.json): {_path_text(paths[0]['path'])}. A rerun "
                "whose verdicts differ can compare its own.\n\n")
    each = "; ".join(f"({i + 1}) {g['runs']} runs: {_path_text(g['path'])}" for i, g in enumerate(paths))
    return (f"Floating-point path: **the runs differ**, {len(paths)} paths in their meta.json: {each}. Verdicts "
            "may differ from a report whose runs all took one path.\n\n")


def _setting(p: Profile, seconds: float) -> str:
    controls_at = "every learning rate" if p.control_lrs == "all" else "the large learning rates"
    headroom = accuracy_setting(p)
    return (f"Setting: {p.model} on {p.data} at {p.size}px"
            f"{f' in {p.channels} channels' if p.channels else ''}, batch {p.batch_size}, {p.steps} steps, small lr "
            f"{p.lr_small:g}, large lr {', '.join(f'{lr:g}' for lr in p.lrs_large)}, {p.seeds} seeds, SGD momentum "
            f"0.9, weight decay 5e-4 (none on PWS alpha). Attribution claims (A*, D*): {p.attribution_model} at "
            f"{p.attribution_size}px with the same data, steps and seeds, at {controls_at}, one run per control: "
            f"{', '.join(CONTROLS)} (+proj: the per-filter mean of every conv weight gradient removed before each "
            f"step; plain+gn: plain convs with exactly PWS's two GroupNorms).{_sweep_setting(p)} "
            f"{headroom + ' ' if headroom else ''}Took {seconds:.0f} s.\n\n")


def _sweep_setting(p: Profile) -> str:
    if p.sweep is None:
        return ""
    w = p.sweep
    return (f" Width sweep (W*): {w.model} {w.scheme} at widths {', '.join(map(str, w.widths))}, {w.seeds} seeds, "
            f"{w.steps} steps at lr {p.lr_small:g}, every step recorded; slopes over seeds as the sweep's slopes.csv "
            f"(its runs and slopes.csv under {SWEEP_DIR}/).")


def _rules() -> str:
    kinds = "".join(f"- **{k}**: {text}\n" for k, text in KINDS.items())
    return ("Statistics, fixed in code (varprobe.claims.summary) before anything runs, one per kind of "
            f"quantity:\n\n{kinds}\n"
            "Verdict rule (fixed before running): **holds** when the whole 95% interval lies on the expected side "
            "of the threshold, **does not hold** when it lies wholly on the other side, **inconclusive** "
            f"otherwise. For an inconclusive row, *{PLANNING_LABEL}* is the number of seeds at which the "
            "observed effect and spread would give an interval that excludes the threshold (none: no effect "
            "observed, or beyond 10000): a figure to size the next experiment; the verdict above stands.\n\n"
            f"{RULE}\n\n")


def _row(f: "Finding") -> str:
    c, s = f.claim, f.summary
    n = s.interval.n if c.kind in ACROSS_RUNS else len(s.per_seed)  # runs, or seeds
    plan = "" if s.verdict != "inconclusive" else (str(s.planning) if s.planning is not None else "none")
    figs = ", ".join(f"[{Path(x).name}]({Path(x).name})" for x in f.figures)
    frag = "" if f.fragility is None else (f"**{f.fragility.shown}**" if f.fragility.fragile else f.fragility.shown)
    return (f"| {f.id} | {c.claim} | {c.quantity} | {c.kind} | {c.expected} | {s.shown} | {n} | **{s.verdict}** | "
            f"{frag} | {plan} | {figs} |\n")


def write_report(findings: list["Finding"], p: Profile, out: OutputDir, seconds: float,
                 runs: Mapping[object, Run] | None = None) -> None:
    """``out/claims.md`` (setting, statistics, the table, counts, causes) and ``out/claims.json``,
    through ``out`` (never over a file varprobe did not write). The counts line splits the rows into
    robust holds / robust does not hold / fragile / inconclusive (``standings`` in claims.json),
    then gives the verdicts alone (``counts``, as before). The setting states the floating-point
    path of ``runs`` (:func:`numeric_paths`; ``numeric_path`` in claims.json), once when every
    run took the same, each with its number of runs when they differ."""
    paths = numeric_paths(runs or {})
    header = (f"# varprobe reproduce ({p.name})\n\n" + _setting(p, seconds) + _numeric_text(paths) + _rules()
              + f"| id | claim | quantity | kind | expected | measured (95% interval) | n | verdict | {FRAGILITY_LABEL} "
                f"| {PLANNING_LABEL} | figures |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    counts = {v: sum(f.verdict == v for f in findings) for v in ("holds", "does not hold", "inconclusive")}
    standings = {v: sum(f.standing == v for f in findings) for v in STANDINGS}
    fragile = ", ".join(f"{sum(f.standing == 'fragile' and f.verdict == v for f in findings)} {v}"
                        for v in ("holds", "does not hold"))
    summary = ("\n" + ", ".join(f"{n} {v}" for v, n in standings.items())
               + f" (of {len(findings)}; fragile: {fragile}). Verdicts alone: "
               + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".\n")
    verdicts = {f.id: f.verdict for f in findings}
    lrs = {} if p.control_lrs != "all" else {"small": p.lr_small}
    many = len(p.lrs_large) > 1
    lrs.update({f"large@{lr:g}" if many else "large": lr for lr in p.lrs_large})
    causes = causes_report(verdicts, lrs)
    out.write_text("claims.md", header + "".join(_row(f) for f in findings) + summary + "\n" + causes
                   + _figure_notes(out.path))
    meta = {"profile": asdict(p), "seconds": seconds, "counts": counts, "standings": standings,
            "fragility_rule": RULE, "numeric_path": {"agree": len(paths) == 1, "paths": paths}, "kinds": KINDS,
            "claims": [f.to_json() for f in findings], "attribution": causes}
    out.write_text("claims.json", json.dumps(_finite(meta), indent=2, allow_nan=False))


def _figure_notes(out: Path) -> str:
    """The figure notes of claims.md: each figure's caption from ``out/captions.json`` (computed
    from the figure's runs by :func:`write_figures`); empty when no figures were written."""
    path = out / CAPTIONS_FILE
    if not path.exists():
        return ""
    captions = json.loads(path.read_text())
    return "\n## Figures\n\n" + "".join(f"- [{name}]({name}): {text}\n" for name, text in captions.items())


def _finite(x):
    """JSON-safe copy: non-finite floats become null (strict JSON has no NaN or Infinity)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x
