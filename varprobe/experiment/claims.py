"""`varprobe reproduce`: the paper's claims (paper-notes section 4), measured, with verdicts.

Every claim is a row: what the paper (or its reconstruction) says, the quantity that tests it, the
side of a threshold it predicts, and the measured value with a 95% Student-t interval over seeds.
The verdict rule (``varprobe.analysis.verdict``) and every threshold below are fixed in this file
before any experiment runs; thresholds come from ``varprobe.theory`` where the theory gives one.
Nothing here is tuned to make a verdict come out one way.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .. import theory
from ..analysis import Interval, mean_ci, verdict
from ..layers import PWSConv2d, init_alpha, reparameterize
from ..models import resnet_cifar
from ..record import Run, load_runs
from .attribution import COMPARISONS, CONTROLS, causes_report
from .config import RunConfig, load_data
from .runner import grid, load_model
from .timing import eval_fn, interleaved_medians, train_step_fn

__all__ = ["Claim", "Finding", "Profile", "PROFILES", "CLAIMS", "reproduce"]

# E|Z| / 1 for Z ~ N(0, 1): the shift ratio of a gradient whose entries are independent and zero-mean.
NULL_SHIFT_RATIO = math.sqrt(2 / math.pi)


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    quantity: str
    direction: str  # ">" or "<": the side of ``threshold`` the claim predicts
    threshold: float
    basis: str      # where the threshold comes from

    @property
    def expected(self) -> str:
        return f"{self.direction} {self.threshold:.4g} ({self.basis})"


CLAIMS = [
    Claim("1a", "The average gradient of un-normalized conv filters is shifted",
          "plain, small lr: gw.shift_ratio, mean over convs after the first and over recorded steps", ">",
          2 * NULL_SHIFT_RATIO, "twice sqrt(2/pi), the value for independent zero-mean gradient entries"),
    Claim("1b", "The shift is mu * dL/db: it follows the bias gradient",
          "plain, small lr: gw.bias_corr (corr over filters of g_i and mu*dL/db_i), mean over convs after the first", ">",
          0.5, "fixed: a majority of the variance explained"),
    Claim("1c", "The shift is sign-consistent across steps",
          "plain, small lr: gw.sign_persistence, mean over convs and steps", ">", 0.5, "0.5: random signs"),
    Claim("1d", "BN removes the shift of the average gradient",
          "bn / plain ratio of mean gw.shift_ratio (same seed, small lr)", "<", 0.5, "fixed: at least halved"),
    Claim("2a", "PWS makes the raw weight's average gradient exactly zero",
          "pws: max over convs and steps of gw.avg_abs / gw.rms", "<", 1e-5, "float32 rounding"),
    Claim("2b", "Without weight decay, PWS raw filter means stay fixed",
          "pws, weight decay 0: max over convs of |relative change| of w.filter_mean_abs, first to last step", "<",
          1e-4, "float32 rounding accumulated over the run"),
    Claim("3a", "At a large lr the shift amplifies conv output variance in plain nets",
          "plain, large lr: log10 growth of out.sq_mean, first to last recorded step, mean over convs after the first", ">",
          0.0, "no growth"),
    Claim("3b", "The filter-sum (shift) term's share of E[y^2] grows (i.i.d. theory split)",
          "plain, large lr: change of mu^2*w.filter_sum_sq / (var*w.sq_norm + mu^2*w.filter_sum_sq), first to last step", ">",
          0.0, "varprobe.theory.second_moment_split"),
    Claim("4a", "Plain nets collapse at a large lr", "plain, large lr: final train accuracy", "<", 0.5,
          "fixed: below half (chance is 0.1)"),
    Claim("4b", "BN trains at the large lr", "bn, large lr: final train accuracy", ">", 0.9, "fixed"),
    Claim("4c", "PWS trains at the large lr like BN", "pws, large lr: final train accuracy", ">", 0.9, "fixed"),
    Claim("4d", "WN alone does not prevent the collapse", "wn, large lr: final train accuracy", "<", 0.5, "fixed"),
    Claim("5a", "WN does not cure the shift: its kernels' filter sums grow",
          "wn, large lr: rho = k.filter_sum_sq / k.sq_norm at the last step, mean over convs", ">", 1.0,
          "E[rho] = 1 for He-initialised filters (varprobe.theory.wn_shift_ratio)"),
    Claim("5b", "Centering removes the filter sum exactly", "centered, large lr: max rho over convs and steps", "<",
          1e-6, "0 exactly, float32 rounding"),
    Claim("5c", "Centering alone removes most of the instability of WN",
          "large lr: train accuracy of centered minus wn (same seed)", ">", 0.0, "no difference"),
    Claim("6a", "PWS: fan * Var(kernel_i) = 2 alpha_i^2 s_i^2 / (s_i^2 + gamma') through training",
          "pws final model: max over filters of relative error against varprobe.theory.pws_fan_var", "<", 1e-4,
          "exact identity, float32 rounding"),
    Claim("6b", "PWS keeps He variance transmission through training; plain drifts",
          "alpha frozen, small lr: |log(r_last / r_first)|, r = out.ch_var / (in.var * k.sq_norm), pws minus plain",
          "<", 0.0, "theory: r is fixed by the kernel for i.i.d. inputs"),
    Claim("7a", "PWS is more robust to mini-batch size than BN",
          "test accuracy drop from the largest to the smallest batch (same samples, lr scaled), bn minus pws", ">",
          0.0, "no difference"),
    Claim("7b", "PWS changes little with the mini-batch size",
          "pws: test accuracy drop from the largest to the smallest batch", "<", 0.05, "fixed: 5 points"),
    Claim("8a", "PWS: train-mode and eval-mode outputs are equal",
          "pws final model: max |train - eval output| / max |output| on held-out images", "<", 1e-5, "float32 rounding"),
    Claim("8b", "BN: train and eval outputs differ", "bn final model: the same ratio", ">", 1e-3, "fixed"),
    Claim("9a", "PWS trains faster per step than BN", "resnet: median train-step time pws / bn", "<", 1.0,
          "equal speed"),
    Claim("9b", "Deployed PWS costs what plain convs cost",
          "resnet eval: reparameterized pws / plain with the same 2 GroupNorms", "<", 1.05, "fixed: 5%"),
    Claim("10", "initalpha sets the first-batch output variance of its convs to exactly 2",
          "resnet pws: max over data-init convs of |Var(y) - 2| / 2 on that batch", "<", 1e-4, "exact by construction"),
    Claim("11a", "Accuracy: PWS within 1 point of BN", "small lr: test accuracy pws minus bn", ">", -0.01, "fixed"),
    Claim("11b", "Accuracy: BN above GN", "small lr: test accuracy bn minus gn", ">", 0.0, "no difference"),
    Claim("11c", "Accuracy: PWS above plain", "small lr: test accuracy pws minus plain", ">", 0.0, "no difference"),
    Claim("12a", "gamma' bounds the PWS gradient scale when the raw weight shrinks",
          "gamma'=1e-3, V scaled by 0.01: max over filters ||dL/dV_i|| / (||dL/dK_i|| c alpha / sqrt(gamma'))", "<",
          1.0, "varprobe.theory.pws_grad_scale_bound"),
    Claim("12b", "Without gamma' the gradient scale grows as V shrinks",
          "gamma'=0: growth of ||dL/dV|| / ||dL/dK|| when V is scaled by 0.1", ">", 5.0,
          "theory: 10 (scale 1/s); fixed at half"),
]
# Attribution (varprobe.experiment.attribution): each comparison isolates one cause, at both learning rates,
# on the profile's attribution net (a ResNet, where PWS keeps two GroupNorm layers).
CLAIMS += [Claim(f"{c.key}-{tag}", f"{c.claim} ({tag} lr)",
                 f"attribution net, {tag} lr: final train accuracy, {c.treatment} minus {c.control} (same seed)",
                 ">", c.threshold, "no difference")
           for tag in ("large", "small") for c in COMPARISONS]
CLAIMS += [
    Claim("D1", "Where plain-net variance grows at a large lr, the filter-sum (shift) share of it grows",
          "attribution net, plain, large lr: change of sum dec.shift / sum dec.measured over convs after the "
          "first, first to last step", ">", 0.0, "no change"),
    Claim("D2", "With the average gradient projected out, the filter-sum share does not grow",
          "attribution net, plain+proj, large lr: the same change", "<", 0.01, "fixed: 1 point"),
]


@dataclass(frozen=True)
class Profile:
    """Scale of the experiments. Learning rates, steps and thresholds are fixed per profile."""

    name: str
    model: str
    data: str
    size: int
    width: int | None
    steps: int
    seeds: int
    lr_small: float
    lr_large: float
    batch_size: int
    every: int
    batch_sizes: tuple[int, ...]  # claim 7
    samples: int                  # claim 7: training samples seen at every batch size
    speed_model: str
    speed_size: int
    speed_batch: int
    speed_rounds: int
    threads: int = 2  # torch CPU threads; 1 is faster when other processes share the cores
    attribution_model: str = "resnet8"  # a ResNet: PWS keeps two GroupNorms there, plain+gn differs from plain
    attribution_size: int = 8

    def base(self) -> RunConfig:
        return RunConfig(model=self.model, data=self.data, size=self.size, width=self.width, steps=self.steps,
                         lr=self.lr_small, batch_size=self.batch_size, every=self.every,
                         eval_steps=(0, self.steps - 1), threads=self.threads)


PROFILES = {
    "tiny": Profile("tiny", "simple_cnn", "digits", 8, 8, 12, 2, 0.02, 0.2, 32, 3, (4, 16), 128,
                    "resnet8", 8, 8, 2, threads=1),
    "quick": Profile("quick", "simple_cnn", "digits", 8, None, 150, 3, 0.02, 0.2, 64, 5, (2, 8, 32), 1536,
                     "resnet8", 16, 32, 5),
    "full": Profile("full", "resnet20", "cifar10", 32, None, 2000, 3, 0.02, 0.2, 128, 20, (2, 8, 32, 128),
                    40000, "resnet20", 32, 128, 9, attribution_model="resnet20", attribution_size=32),
}
MAIN_SCHEMES = ("plain", "bn", "gn", "wn", "centered", "pws")
CIFAR_ROOT = "data/cifar-10-batches-py"
# Seconds per training step on a 2-core CPU, measured with the probe attached (benchmarks/RESULTS.md).
_STEP_SECONDS = {("simple_cnn", 8): 0.01, ("resnet8", 8): 0.017, ("resnet20", 32): 0.3}


def _estimate_minutes(p: Profile) -> float:
    per_step = _STEP_SECONDS.get((p.model, p.size), 0.3)
    steps = p.seeds * ((len(MAIN_SCHEMES) * 2 + 2) * p.steps
                       + 3 * sum(max(1, p.samples // b) * b / p.batch_size for b in p.batch_sizes))
    per_attribution_step = _STEP_SECONDS.get((p.attribution_model, p.attribution_size), 0.3)
    attribution = p.seeds * len(CONTROLS) * 2 * p.steps * per_attribution_step
    return (steps * per_step + attribution) / 60


@dataclass
class Finding:
    claim: Claim
    measured: Interval
    verdict: str
    per_seed: list[float]
    figures: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        c = self.claim
        return {"id": c.id, "claim": c.claim, "quantity": c.quantity, "expected": c.expected,
                "direction": c.direction, "threshold": c.threshold,
                "measured": {"mean": self.measured.estimate, "ci95": [self.measured.low, self.measured.high],
                             "n": self.measured.n, "per_seed": self.per_seed},
                "verdict": self.verdict, "figures": self.figures}


# -- reading runs ----------------------------------------------------------------------------------
def _conv_rows(frame: pd.DataFrame, quantity: str, mode: str = "train", min_depth: int = 1) -> pd.DataFrame:
    f = frame[(frame["quantity"] == quantity) & (frame["mode"] == mode)]
    return f[f["module_type"].str.contains("Conv") & (f["depth"] >= min_depth)]


def _per_layer(frame: pd.DataFrame, quantity: str, mode: str = "train", min_depth: int = 1) -> pd.DataFrame:
    """step x layer table of ``quantity`` for conv layers at depth >= ``min_depth``."""
    return _conv_rows(frame, quantity, mode, min_depth).pivot_table(index="step", columns="layer", values="value")


def _mean(frame: pd.DataFrame, quantity: str, **kw) -> float:
    return float(_conv_rows(frame, quantity, **kw)["value"].mean())


def _first_last(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    table = table.dropna(how="all")
    return table.iloc[0], table.iloc[-1]


def _acc(run: Run, key: str = "train_accuracy") -> float:
    return float(run.meta["result"][key])


# -- measurements per claim ------------------------------------------------------------------------
class _Runs:
    """Runs of the main grid indexed by (scheme, lr, seed)."""

    def __init__(self, runs: list[Run]) -> None:
        self.by = {(r.config["scheme"], r.config["lr"], r.config["seed"]): r for r in runs}

    def get(self, scheme: str, lr: float, seed: int) -> Run:
        return self.by[(scheme, lr, seed)]


def _shift_fraction(frame: pd.DataFrame) -> float:
    """Change, first to last recorded step, of the i.i.d.-theory shift share of E[y^2], mean over convs."""
    q = {n: _per_layer(frame, n) for n in ("in.mean", "in.var", "w.filter_sum_sq", "w.sq_norm")}
    shift = q["in.mean"] ** 2 * q["w.filter_sum_sq"]
    frac = shift / (q["in.var"] * q["w.sq_norm"] + shift)
    first, last = _first_last(frac)
    return float((last - first).mean())


def _transmission_drift(frame: pd.DataFrame, sq_norm: str) -> float:
    r = _per_layer(frame, "out.ch_var") / (_per_layer(frame, "in.var") * _per_layer(frame, sq_norm))
    first, last = _first_last(np.log(r))
    return float((last - first).abs().mean())


def _rho(frame: pd.DataFrame) -> pd.DataFrame:
    return _per_layer(frame, "k.filter_sum_sq", min_depth=0) / _per_layer(frame, "k.sq_norm", min_depth=0)


def _shift_share_change(frame: pd.DataFrame) -> float:
    """Change, first to last recorded step, of the filter-sum share of the conv output second moment,
    pooled over convs after the first: sum of dec.shift / sum of dec.measured (as plot.decomposition)."""
    share = (_per_layer(frame, "dec.shift").sum(axis=1, min_count=1)
             / _per_layer(frame, "dec.measured").sum(axis=1, min_count=1)).dropna()
    return float(share.iloc[-1] - share.iloc[0])


def _log_growth(frame: pd.DataFrame, quantity: str) -> float:
    first, last = _first_last(np.log10(_per_layer(frame, quantity)))
    return float((last - first).mean())


@torch.no_grad()
def _pws_fan_var_error(model: torch.nn.Module) -> float:
    worst = 0.0
    for m in model.modules():
        if isinstance(m, PWSConv2d):
            v = m.weight.double().flatten(1)
            k = m.kernel().double().flatten(1)
            measured = m.fan_value * k.var(dim=1, unbiased=False)
            predicted = theory.pws_fan_var(m.alpha.double().flatten(), v.var(dim=1, unbiased=False), m.gamma_eff)
            worst = max(worst, float(np.max(np.abs(measured.numpy() - predicted) / predicted)))
    return worst


@torch.no_grad()
def _train_eval_gap(model: torch.nn.Module, x: torch.Tensor) -> float:
    model.train()
    y_train = model(x)
    model.eval()
    y_eval = model(x)
    return float((y_train - y_eval).abs().max() / y_eval.abs().max())


def _data_init_error(seed: int, size: int) -> float:
    torch.manual_seed(seed)
    model = resnet_cifar(8, "pws")
    x = torch.randn(32, 3, size, size)
    outputs: dict[str, torch.Tensor] = {}
    names = set(init_alpha(model, x))
    hooks = [m.register_forward_hook(lambda mod, a, y, n=n: outputs.__setitem__(n, y.detach()))
             for n, m in model.named_modules() if n in names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return max(abs(float(y.double().var(unbiased=False)) - 2.0) / 2.0 for y in outputs.values())


def _grad_ratio(gamma: float, scale: float, seed: int) -> tuple[float, float]:
    """(max_i ||dL/dV_i|| / ||dL/dK_i||, the bound c*alpha/sqrt(gamma')) after V *= scale, for a
    random upstream gradient G = dL/dK on a 64x64x3x3 PWS conv."""
    torch.manual_seed(seed)
    conv = PWSConv2d(64, 64, 3, gamma=gamma).double()
    with torch.no_grad():
        conv.weight.mul_(scale)
    kernel = conv.kernel()
    g = torch.randn_like(kernel)
    (gv,) = torch.autograd.grad(kernel, conv.weight, g)
    ratio = float((gv.flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1)).max())
    bound = conv.gain / math.sqrt(gamma) if gamma > 0 else math.inf
    return ratio, bound


def _time_steps(profile: Profile, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per train step (bn, gn, pws) and per eval forward (deployed pws, plain+2GN)."""
    torch.manual_seed(seed)
    depth = int(profile.speed_model.removeprefix("resnet"))
    x = torch.randn(profile.speed_batch, 3, profile.speed_size, profile.speed_size)
    y = torch.randint(0, 10, (profile.speed_batch,))
    timers = {s: train_step_fn(resnet_cifar(depth, s), x, y) for s in ("bn", "gn", "pws")}
    timers["eval:pws"] = eval_fn(reparameterize(resnet_cifar(depth, "pws")), x)
    timers["eval:plain"] = eval_fn(resnet_cifar(depth, "plain+gn"), x)
    med = interleaved_medians(timers, profile.speed_rounds, seed)
    return ({s: med[s] for s in ("bn", "gn", "pws")}, {k: med[f"eval:{k}"] for k in ("pws", "plain")})


# -- the pipeline ----------------------------------------------------------------------------------
def reproduce(profile: str | Profile = "quick", out: str | Path = "reproduce", seeds: int | None = None,
              progress: bool = True, log: Callable[[str], None] = print, jobs: int = 1) -> list[Finding]:
    """Run every experiment behind ``CLAIMS`` at the scale of ``profile`` and write
    ``out/claims.md``, ``out/claims.json`` and the figures next to them (``jobs`` training runs at
    once, see ``grid``). Returns the findings."""
    p = PROFILES[profile] if isinstance(profile, str) else profile
    if seeds is not None:
        p = replace(p, seeds=seeds)
    if p.data == "cifar10" and not (Path(CIFAR_ROOT) / "data_batch_1").exists():
        log(f"[reproduce] no CIFAR-10 at {CIFAR_ROOT}: using labelled synthetic 32x32 images instead")
        p = replace(p, data="synthetic")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(p.threads)
    n_runs = p.seeds * (len(MAIN_SCHEMES) * 2 + 2 + 3 * len(p.batch_sizes) + 2 * len(CONTROLS))
    log(f"[reproduce] {n_runs} training runs; estimated time on a 2-core CPU: "
        f"{_estimate_minutes(p):.0f} min")
    seed_list = list(range(p.seeds))
    base = p.base()
    start = time.perf_counter()
    values: dict[str, list[float]] = {c.id: [] for c in CLAIMS}

    log(f"[reproduce] profile {p.name}: {p.model} on {p.data} {p.size}px, {p.steps} steps, {p.seeds} seeds")
    main = _Runs(grid(base, out / "runs" / "main", schemes=MAIN_SCHEMES, lrs=[p.lr_small, p.lr_large],
                      seeds=seed_list, progress=progress, jobs=jobs))
    extra = grid(base.replace(scheme="pws", weight_decay=0.0), out / "runs" / "pws-no-wd", seeds=seed_list,
                 progress=progress, jobs=jobs)
    frozen = grid(base.replace(scheme="pws", freeze_alpha=True), out / "runs" / "pws-frozen-alpha",
                  seeds=seed_list, progress=progress, jobs=jobs)
    batch_runs = {}
    largest = max(p.batch_sizes)
    for b in p.batch_sizes:
        steps = max(1, p.samples // b)
        cfg = base.replace(batch_size=b, steps=steps, lr=p.lr_small * b / largest, every=steps + 1, eval_steps=())
        for r in grid(cfg, out / "runs" / f"batch-{b}", schemes=["bn", "gn", "pws"], seeds=seed_list,
                      progress=progress, jobs=jobs):
            batch_runs[(r.config["scheme"], b, r.config["seed"])] = r
    attribution_base = base.replace(model=p.attribution_model, size=p.attribution_size)
    log(f"[reproduce] attribution: {p.attribution_model} at {p.attribution_size}px, controls {', '.join(CONTROLS)}")
    controls = {}
    for label, changes in CONTROLS.items():
        for r in grid(attribution_base.replace(**changes), out / "runs" / "attribution" / label,
                      lrs=[p.lr_small, p.lr_large], seeds=seed_list, progress=progress, jobs=jobs):
            controls[(label, r.config["lr"], r.config["seed"])] = r
    split = load_data(base.data, base.image_size, 0, base.data_limit, base.synthetic_n)
    held_out = split.x_test[:base.eval_batch]

    for i, seed in enumerate(seed_list):
        small = {s: main.get(s, p.lr_small, seed) for s in MAIN_SCHEMES}
        large = {s: main.get(s, p.lr_large, seed) for s in MAIN_SCHEMES}
        plain_shift = _mean(small["plain"].frame, "gw.shift_ratio")
        values["1a"].append(plain_shift)
        values["1b"].append(_mean(small["plain"].frame, "gw.bias_corr"))
        values["1c"].append(_mean(small["plain"].frame, "gw.sign_persistence"))
        values["1d"].append(_mean(small["bn"].frame, "gw.shift_ratio") / plain_shift)
        pws_rows = small["pws"].frame
        ratio = _per_layer(pws_rows, "gw.avg_abs", min_depth=0) / _per_layer(pws_rows, "gw.rms", min_depth=0)
        values["2a"].append(float(ratio.max().max()))
        first, last = _first_last(_per_layer(extra[i].frame, "w.filter_mean_abs", min_depth=0))
        values["2b"].append(float(((last - first).abs() / first.abs()).max()))
        values["3a"].append(_log_growth(large["plain"].frame, "out.sq_mean"))
        values["3b"].append(_shift_fraction(large["plain"].frame))
        for cid, s in (("4a", "plain"), ("4b", "bn"), ("4c", "pws"), ("4d", "wn")):
            values[cid].append(_acc(large[s]))
        values["5a"].append(float(_rho(large["wn"].frame).dropna(how="all").iloc[-1].mean()))
        values["5b"].append(float(_rho(large["centered"].frame).max().max()))
        values["5c"].append(_acc(large["centered"]) - _acc(large["wn"]))
        values["6a"].append(_pws_fan_var_error(load_model(small["pws"])))
        values["6b"].append(_transmission_drift(frozen[i].frame, "k.sq_norm")
                            - _transmission_drift(small["plain"].frame, "w.sq_norm"))
        drop = {s: _acc(batch_runs[(s, largest, seed)], "test_accuracy")
                - _acc(batch_runs[(s, min(p.batch_sizes), seed)], "test_accuracy") for s in ("bn", "pws")}
        values["7a"].append(drop["bn"] - drop["pws"])
        values["7b"].append(drop["pws"])
        values["8a"].append(_train_eval_gap(load_model(small["pws"]), held_out))
        values["8b"].append(_train_eval_gap(load_model(small["bn"]), held_out))
        train_t, eval_t = _time_steps(p, seed)
        values["9a"].append(train_t["pws"] / train_t["bn"])
        values["9b"].append(eval_t["pws"] / eval_t["plain"])
        values["10"].append(_data_init_error(seed, p.speed_size))
        acc = {s: _acc(small[s], "test_accuracy") for s in MAIN_SCHEMES}
        values["11a"].append(acc["pws"] - acc["bn"])
        values["11b"].append(acc["bn"] - acc["gn"])
        values["11c"].append(acc["pws"] - acc["plain"])
        ratio, bound = _grad_ratio(1e-3, 0.01, seed)
        values["12a"].append(ratio / bound)
        values["12b"].append(_grad_ratio(0.0, 0.1, seed)[0] / _grad_ratio(0.0, 1.0, seed)[0])
        for tag, lr in (("large", p.lr_large), ("small", p.lr_small)):
            for c in COMPARISONS:
                values[f"{c.key}-{tag}"].append(_acc(controls[(c.treatment, lr, seed)])
                                                - _acc(controls[(c.control, lr, seed)]))
        values["D1"].append(_shift_share_change(controls[("plain", p.lr_large, seed)].frame))
        values["D2"].append(_shift_share_change(controls[("plain+proj", p.lr_large, seed)].frame))

    findings = []
    for c in CLAIMS:
        ci = mean_ci(values[c.id])
        findings.append(Finding(c, ci, verdict(ci, c.direction, c.threshold), values[c.id]))
    outcomes = pd.DataFrame([{"control": label, "lr": lr, "seed": seed, "train_accuracy": _acc(r)}
                             for (label, lr, seed), r in controls.items()])
    _write_figures(findings, out, p, outcomes)
    _write_report(findings, p, out, time.perf_counter() - start)
    log(f"[reproduce] wrote {out / 'claims.md'} and {out / 'claims.json'} in {time.perf_counter() - start:.0f} s")
    return findings


# claim id prefix -> figure files that show its evidence
FIGURES = {"1": ["shift.png"], "2": ["shift.png"], "3": ["amplification.png", "spp-large-lr.png"],
           "4": ["collapse.png"], "5": ["filter-sums.png", "collapse.png"], "6": ["theory.png"],
           "11": ["collapse.png"], "A": ["attribution.png"], "D": ["decomposition.png"]}


def _figures_for(claim_id: str) -> list[str]:
    return FIGURES[claim_id[0]] if claim_id[0] in "AD" else FIGURES.get(claim_id.rstrip("abcd"), [])


def _write_figures(findings: list[Finding], out: Path, p: Profile, outcomes: pd.DataFrame) -> None:
    """Draw the evidence with ``varprobe.plot`` from the run tables, next to claims.md, and list
    each figure in the findings it supports."""
    from .. import plot  # lazily: matplotlib only when figures are drawn

    frame = load_runs(sorted((out / "runs" / "main").glob("*")))
    small, large = frame[frame["lr"] == p.lr_small], frame[frame["lr"] == p.lr_large]
    frozen = load_runs(sorted((out / "runs" / "pws-frozen-alpha").glob("*")))
    wn_like = large[large["scheme"].isin(["wn", "centered", "pws"])]
    shown = ["plain", "plain+proj", "plain+gn", "plain+gn+proj", "centered", "pws"]
    decomposed = load_runs([d for label in shown for d in sorted((out / "runs" / "attribution" / label).glob("*"))])
    figures = {
        "shift.png": lambda: plot.shift(small),
        "amplification.png": lambda: plot.curves(large[large["scheme"].isin(["plain", "bn", "pws"])], "out.sq_mean"),
        "spp-large-lr.png": lambda: plot.spp(large),
        "collapse.png": lambda: plot.collapse_map(frame),
        "filter-sums.png": lambda: plot.curves(wn_like, "k.filter_sum_sq"),
        "theory.png": lambda: plot.draw(pd.concat([small[small["scheme"] == "plain"], frozen]), "theory"),
        "attribution.png": lambda: plot.result_map(outcomes, title=f"Final train accuracy of the attribution "
                                                   f"controls ({p.attribution_model}): mean [min, max] over seeds"),
        "decomposition.png": lambda: plot.decomposition(decomposed[decomposed["lr"] == p.lr_large]),
    }
    for name, draw in figures.items():
        plot.save_figure(draw(), out / name)
    for f in findings:
        f.figures = _figures_for(f.claim.id)


def _write_report(findings: list[Finding], p: Profile, out: Path, seconds: float) -> None:
    header = (f"# varprobe reproduce ({p.name})\n\n"
              f"Setting: {p.model} on {p.data} at {p.size}px, batch {p.batch_size}, {p.steps} steps, small lr "
              f"{p.lr_small}, large lr {p.lr_large}, {p.seeds} seeds, SGD momentum 0.9, weight decay 5e-4 "
              f"(none on PWS alpha). Attribution claims (A*, D*): {p.attribution_model} at {p.attribution_size}px "
              f"with the same data, steps, learning rates and seeds, one run per control: "
              f"{', '.join(CONTROLS)} (+proj: the per-filter mean of every conv weight gradient removed before "
              f"each step; plain+gn: plain convs with exactly PWS's two GroupNorms). Took {seconds:.0f} s.\n\n"
              "Verdict rule (fixed before running): **holds** when the whole 95% interval over seeds lies on the "
              "expected side of the threshold, **does not hold** when it lies wholly on the other side, "
              "**inconclusive** otherwise.\n\n"
              "| id | claim | quantity | expected | measured (95% CI) | verdict | figures |\n"
              "|---|---|---|---|---|---|---|\n")
    rows = "".join(f"| {f.claim.id} | {f.claim.claim} | {f.claim.quantity} | {f.claim.expected} | {f.measured} | "
                   f"**{f.verdict}** | {', '.join(f'[{Path(x).name}]({Path(x).name})' for x in f.figures)} |\n"
                   for f in findings)
    counts = {v: sum(f.verdict == v for f in findings) for v in ("holds", "does not hold", "inconclusive")}
    summary = "\n" + ", ".join(f"{n} {v}" for v, n in counts.items()) + f" (of {len(findings)}).\n"
    causes = causes_report({f.claim.id: f.verdict for f in findings}, {"small": p.lr_small, "large": p.lr_large})
    (out / "claims.md").write_text(header + rows + summary + "\n" + causes)
    meta = {"profile": asdict(p), "seconds": seconds, "claims": [f.to_json() for f in findings],
            "attribution": causes}
    (out / "claims.json").write_text(json.dumps(_finite(meta), indent=2, allow_nan=False))


def _finite(x):
    """JSON-safe copy: non-finite floats become null (strict JSON has no NaN or Infinity)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x

