"""``reproduce``: run every experiment a profile needs, measure every claim row, write the report."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from ..experiment.config import load_data
from ..experiment.grid import default_threads, grid
from ..record import Run
from ..record.files import OutputDir
from .catalogue import CLAIMS, Claim
from .fragility import Fragility, fragility
from .measures import Evidence
from .profiles import PROFILES, Experiment, Profile, configs, estimate_minutes, measured_step_seconds, plan
from .summary import Summary, summarize
from .widths import run_sweep, sweep_configs

__all__ = ["Finding", "rows", "run_plan", "reproduce", "CIFAR_ROOT"]

CIFAR_ROOT = "data/cifar-10-batches-py"


@dataclass
class Finding:
    """One row of the report: a claim at one learning rate (``lr`` None: not lr-specific), with
    the fragility of its verdict (:mod:`varprobe.claims.fragility`; None when inconclusive)."""

    claim: Claim
    id: str
    lr: float | None
    summary: Summary
    figures: list[str] = field(default_factory=list)
    fragility: Fragility | None = None

    @property
    def standing(self) -> str:
        """"robust holds", "robust does not hold", "fragile" or "inconclusive" (a settled row
        without a fragility measure is never called robust)."""
        if self.verdict not in ("holds", "does not hold"):
            return "inconclusive"
        return "fragile" if self.fragility is None or self.fragility.fragile else f"robust {self.verdict}"

    @property
    def verdict(self) -> str:
        return self.summary.verdict

    @property
    def measured(self):
        return self.summary.interval

    @property
    def per_seed(self) -> list[float]:
        return self.summary.per_seed

    def to_json(self) -> dict:
        c, s = self.claim, self.summary
        return {"id": self.id, "claim": c.claim, "quantity": c.quantity, "kind": c.kind, "lr": self.lr,
                "expected": c.expected, "direction": c.direction, "threshold": c.threshold,
                "measured": {"estimate": s.interval.estimate, "ci95": [s.interval.low, s.interval.high],
                             "n": s.interval.n if c.kind != "outcome2" else len(s.per_seed),
                             "per_seed": s.per_seed, "shown": s.shown},
                "verdict": s.verdict, "planning_seeds": s.planning,
                "fragility": self.fragility.to_json() if self.fragility is not None else None,
                "standing": self.standing, "figures": self.figures}


def rows(p: Profile, claims: list[Claim] = CLAIMS) -> list[tuple[Claim, str, float | None]]:
    """(claim, row id, lr) of every row of profile ``p``: "small" claims at the small lr, "large"
    claims at each large lr (id ``ID@LR`` when there are several), "none" claims once. Attribution
    rows at the small lr only where the controls run there. "sweep" claims once, where ``p`` has a
    sweep part."""
    out = []
    for c in claims:
        if c.at == "sweep":
            if p.sweep is not None:
                out.append((c, c.id, None))
        elif c.at == "small":
            if c.id[0] == "A" and p.control_lrs != "all":
                continue
            out.append((c, c.id, p.lr_small))
        elif c.at == "large":
            many = len(p.lrs_large) > 1
            out += [(c, f"{c.id}@{lr:g}" if many else c.id, lr) for lr in p.lrs_large]
        else:
            out.append((c, c.id, None))
    return out


def run_plan(experiments: list[Experiment], root: Path, progress: bool = True, jobs: int = 1
             ) -> dict[tuple[str, float | None, int], Run]:
    """Run every experiment's grid into ``root`` (one folder per config: a config two experiments
    share runs once), ``jobs`` runs at a time, and key the runs by (label, lr, seed). The one place
    that runs grids."""
    runs: dict[tuple[str, float | None, int], Run] = {}
    for e in experiments:
        for r in grid(e.base, root, schemes=e.schemes, lrs=e.lrs, seeds=e.seeds, progress=progress, jobs=jobs):
            c = r.config
            runs[(e.label.format(scheme=c["scheme"]), c["lr"] if e.keyed_by_lr else None, c["seed"])] = r
    return runs


def _measure(claim: Claim, ev: Evidence, seed: int, lr: float | None, log: Callable[[str], None]):
    try:
        return claim.measure(ev, seed, lr)
    except (KeyError, IndexError) as exc:  # a failed run without a result, or a table without the rows
        if claim.kind in ("outcome", "outcome2"):
            raise
        log(f"[reproduce] {claim.id} seed {seed} lr {lr}: no value ({type(exc).__name__}: {exc})")
        return (math.nan, math.nan) if claim.kind == "paired" else math.nan


def _sweep_minutes(p: Profile, jobs: int) -> float:
    """The sweep part's share of the estimate: its runs as :func:`estimate_minutes` counts runs
    recorded every step (the step time measured at the model's default width, not at each width)."""
    return sum(c.steps * measured_step_seconds(c) * 1.6 for c in sweep_configs(p)) / jobs / 60


def reproduce(profile: str | Profile = "quick", out: str | Path = "reproduce", seeds: int | None = None,
              progress: bool = True, log: Callable[[str], None] = print, jobs: int = 1) -> list[Finding]:
    """Run every experiment behind ``CLAIMS`` at the scale of ``profile`` and write
    ``out/claims.md``, ``out/claims.json`` and the figures next to them, ``jobs`` training runs at a
    time (one loky worker process each, see :func:`varprobe.experiment.grid`). Returns the findings.

    ``out`` is marked as a report directory (:class:`~varprobe.record.files.OutputDir`): a rerun
    replaces the report files it wrote there; a file of the report's names that varprobe did not
    write (or that was edited since) is refused with one
    :class:`~varprobe.record.files.WriteRefused` line before anything runs, and no other file in
    ``out`` is touched. The runs go to ``out/runs`` (:func:`varprobe.experiment.grid`'s rules)."""
    from .report import report_files, write_figures, write_report  # lazily: matplotlib when a report is written

    if isinstance(profile, str) and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    p = PROFILES[profile] if isinstance(profile, str) else profile
    if seeds is not None:
        p = replace(p, seeds=seeds)
    if jobs > 1:  # the cores are shared among the workers (a thread count is part of a run's config)
        p = replace(p, threads=default_threads(jobs))
    if p.data == "cifar10" and not (Path(CIFAR_ROOT) / "data_batch_1").exists():
        log(f"[reproduce] no CIFAR-10 at {CIFAR_ROOT}: using labelled synthetic 32x32 images instead")
        p = replace(p, data="synthetic")
    out = Path(out)
    report = OutputDir(out, "report")
    report.check(report_files(p))  # before anything runs: never over a file varprobe did not write
    report.ensure()
    torch.set_num_threads(p.threads)
    experiments = plan(p)
    n_runs = len(configs(experiments)) + len(sweep_configs(p))
    log(f"[reproduce] profile {p.name}: {p.model} on {p.data} {p.size}px, {p.steps} steps, {p.seeds} seeds, "
        f"lrs {', '.join(f'{lr:g}' for lr in p.lrs)}")
    estimate = estimate_minutes(p, experiments, jobs) + _sweep_minutes(p, jobs)
    log(f"[reproduce] {n_runs} training runs, {jobs} at a time; estimated from step times measured here: "
        f"{estimate:.1f} min")
    start = time.perf_counter()
    runs = run_plan(experiments, out / "runs", progress, jobs)
    base = p.base()
    split = load_data(base.data, base.image_size, 0, base.data_limit, base.synthetic_n, base.channels)
    ev = Evidence(p, runs, split.x_test[:base.eval_batch])
    swept = run_sweep(p, out, progress, jobs, log)
    if swept is not None:
        ev.sweeps["sweep"] = swept
    findings = []
    for claim, row_id, lr in rows(p):
        seeds = p.sweep.seeds if claim.at == "sweep" else p.seeds
        values = [_measure(claim, ev, seed, lr, log) for seed in range(seeds)]
        s = summarize(claim.kind, values, claim.direction, claim.threshold)
        findings.append(Finding(claim, row_id, lr, s,
                                fragility=fragility(claim.kind, values, claim.direction, claim.threshold, s.verdict)))
    write_figures(findings, report, p, ev)
    seconds = time.perf_counter() - start
    write_report(findings, p, report, seconds, runs)
    log(f"[reproduce] wrote {out / 'claims.md'} and {out / 'claims.json'}; took {seconds / 60:.1f} min "
        f"(estimated {estimate:.1f} min)")
    return findings
