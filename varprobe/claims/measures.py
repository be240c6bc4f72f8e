"""What each claim reads from the runs: one value per seed (and learning rate), pure functions of
the run directories (probe tables, meta.json results, final models) or of small fixed computations.

Every ``measure`` has the signature ``(evidence, seed, lr) -> value``; the value's type follows the
claim's kind (``varprobe.claims.summary``): a float, a bool (an outcome) or a (treatment, control)
pair of either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .. import theory
from ..analysis.compare import compare
from ..analysis.rows import conv_rows, is_conv, pooled_shares
from .causes import EARLY_STEPS
from ..layers import PWSConv2d, init_alpha, reparameterize
from ..models import resnet_cifar
from ..record import Run
from ..vocabulary import TRAINED
from ..experiment.runner import load_model
from ..experiment.timing import eval_fn, interleaved_medians, train_step_fn

from .profiles import MAIN_SCHEMES

if TYPE_CHECKING:
    from .profiles import Profile

__all__ = ["Evidence", "TRAINED", "conv_mean", "per_layer", "shift_share", "transmission_drift", "rho",
           "shift_share_change", "log_growth", "pws_fan_var_error", "train_eval_gap", "data_init_error",
           "grad_ratio", "grad_scale_growth", "accuracy", "step_times", "early_value", "early_share",
           "growth_outcome", "cause_runs", "theory_error_at_init"]



@dataclass
class Evidence:
    """The finished runs of one ``reproduce`` call, keyed by (label, lr, seed); ``lr`` is None for
    runs whose learning rate is derived (the batch-size runs). Labels: a main scheme ("plain", ...),
    "extra:<name>", "ctl:<control>", "batch<b>:<scheme>". ``sweeps``: the profile's width sweep
    ("sweep", ``varprobe.claims.widths``)."""

    profile: "Profile"
    runs: dict[tuple[str, float | None, int], Run]
    held_out: torch.Tensor
    cache: dict = field(default_factory=dict)
    sweeps: dict = field(default_factory=dict)  # name -> varprobe.experiment.sweep.SweepResult (rows W*)

    def get(self, label: str, lr: float | None, seed: int) -> Run:
        return self.runs[(label, lr, seed)]

    def frame(self, label: str, lr: float | None, seed: int) -> pd.DataFrame:
        return self.get(label, lr, seed).frame


def accuracy(run: Run, key: str = "train_accuracy") -> float:
    """``meta.json`` result ``key`` of a finished or collapsed run."""
    return float(run.meta["result"][key])


# -- reading probe tables --------------------------------------------------------------------------
def _conv_rows(frame: pd.DataFrame, quantity: str, mode: str = "train", min_depth: int = 1) -> pd.DataFrame:
    f = frame[(frame["quantity"] == quantity) & (frame["mode"] == mode)]
    return conv_rows(f[f["depth"] >= min_depth])


def per_layer(frame: pd.DataFrame, quantity: str, mode: str = "train", min_depth: int = 1) -> pd.DataFrame:
    """step x layer table of ``quantity`` for conv layers at depth >= ``min_depth``."""
    return _conv_rows(frame, quantity, mode, min_depth).pivot_table(index="step", columns="layer", values="value")


def conv_mean(frame: pd.DataFrame, quantity: str, min_depth: int = 1) -> float:
    """Mean of ``quantity`` over conv layers at depth >= ``min_depth`` and recorded steps."""
    return float(_conv_rows(frame, quantity, min_depth=min_depth)["value"].mean())


def _first_last(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    table = table.dropna(how="all")
    return table.iloc[0], table.iloc[-1]


def shift_share(frame: pd.DataFrame) -> float:
    """Change, first to last recorded step, of the i.i.d.-theory shift share
    mu^2 w.filter_sum_sq / (var w.sq_norm + mu^2 w.filter_sum_sq) of E[y^2], mean over convs."""
    q = {n: per_layer(frame, n) for n in ("in.mean", "in.var", "w.filter_sum_sq", "w.sq_norm")}
    index, columns = q["in.mean"].index, q["in.mean"].columns
    for t in q.values():  # the step x layer cells of any of them, as pandas arithmetic would align them
        index, columns = index.union(t.index), columns.union(t.columns)
    q = {n: t.reindex(index=index, columns=columns) for n, t in q.items()}
    split = theory.split_from_norms(q["w.sq_norm"], q["w.filter_sum_sq"], q["in.mean"], q["in.var"])
    share = pd.DataFrame(np.asarray(split.shift_fraction), index=index, columns=columns)
    first, last = _first_last(share)
    return float((last - first).mean())


def transmission_drift(frame: pd.DataFrame, sq_norm: str) -> float:
    """mean over convs of |ln(r_last / r_first)|, r = out.ch_var / (in.var * sq_norm)."""
    r = per_layer(frame, "out.ch_var") / (per_layer(frame, "in.var") * per_layer(frame, sq_norm))
    first, last = _first_last(np.log(r))
    return float((last - first).abs().mean())


def rho(frame: pd.DataFrame) -> pd.DataFrame:
    """step x conv table of rho = k.filter_sum_sq / k.sq_norm (``theory.wn_shift_ratio`` averaged
    as a ratio of filter means), every conv including the first."""
    return per_layer(frame, "k.filter_sum_sq", min_depth=0) / per_layer(frame, "k.sq_norm", min_depth=0)


def theory_error_at_init(frame: pd.DataFrame, quantity: str = "out.ch_var") -> float:
    """Median over conv layers (every depth) of |measured / predicted - 1| of ``quantity`` at the
    run's first recorded training step (initialization), the prediction
    ``varprobe.analysis.compare`` makes (per-channel and padding-aware where the run recorded
    dec.pred_*, else pooled). NaN when the step has no prediction."""
    t = compare(frame)
    t = t[(t["quantity"] == quantity) & is_conv(t)]
    if t.empty:
        return float("nan")
    first = t[t["step"] == t["step"].min()]
    return float(first["rel_error"].abs().median())


def shift_share_change(frame: pd.DataFrame) -> float:
    """Change, first to last recorded step, of sum dec.shift / sum dec.measured over convs after
    the first (``varprobe.analysis.rows.pooled_shares``, as the decomposition figure)."""
    share = pooled_shares(frame, ["dec.shift"]).sort_values("step")["share"]
    return float(share.iloc[-1] - share.iloc[0])


def log_growth(frame: pd.DataFrame, quantity: str) -> float:
    """Geometric mean over convs after the first of the growth factor last / first of ``quantity``."""
    first, last = _first_last(np.log(per_layer(frame, quantity)))
    return float(np.exp((last - first).mean()))


# -- the competing explanation (varprobe.claims.causes) -------------------------------------------
def _early(table: pd.DataFrame, k: int) -> float:
    """Median over layers of the mean over the first ``k`` recorded steps after step 0."""
    table = table[table.index > 0].iloc[:k]
    value = table.mean().median()
    return float(value) if value == value else float("nan")


def early_value(frame: pd.DataFrame, quantity: str, k: int = EARLY_STEPS) -> float:
    """A run's early value of ``quantity``: the median over conv layers after the first of each
    layer's mean over the first ``k`` recorded steps after step 0 (NaN values skipped; NaN when
    there is none)."""
    return _early(per_layer(frame, quantity), k)


def early_share(frame: pd.DataFrame, k: int = EARLY_STEPS) -> float:
    """The early value (as :func:`early_value`) of the per-layer share dec.shift / dec.measured."""
    return _early(per_layer(frame, "dec.shift") / per_layer(frame, "dec.measured"), k)


def growth_outcome(frame: pd.DataFrame, quantity: str = "out.sq_mean") -> float:
    """Mean over conv layers after the first of ln(last / first) of ``quantity``, first and last
    recorded step of the run; a layer whose last value is not finite (the run blew up) grew
    without bound: +inf."""
    table = per_layer(frame, quantity).dropna(how="all")
    if len(table) < 2:
        return float("nan")
    first, last = table.iloc[0], table.iloc[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.log(last.where(np.isfinite(last), np.inf) / first)
    return float(growth.mean())


def cause_runs(ev: Evidence, lr: float, seed: int) -> list[dict]:
    """Per distinct run at ``lr`` and ``seed`` among the main schemes and the attribution controls
    (a control that is a main run counted once): its label, the predictors' early values ("shift":
    gw.shift_ratio, "share": dec.shift / dec.measured, "update": w.update_ratio) and the outcomes
    ("collapse": final train accuracy below TRAINED; "growth": :func:`growth_outcome`). Runs
    without a result (failed) are left out. Cached per (lr, seed)."""
    key = ("causes", lr, seed)
    if key not in ev.cache:
        seen, out = set(), []
        for (label, run_lr, run_seed), run in sorted(ev.runs.items(), key=lambda kv: str(kv[0])):
            if run_lr != lr or run_seed != seed or str(run.path) in seen:
                continue
            if not (label in MAIN_SCHEMES or label.startswith("ctl:")):
                continue
            try:
                collapsed = not accuracy(run) >= TRAINED
            except KeyError:
                continue
            seen.add(str(run.path))
            f = run.frame
            out.append({"label": label, "shift": early_value(f, "gw.shift_ratio"), "share": early_share(f),
                        "update": early_value(f, "w.update_ratio"), "collapse": collapsed,
                        "growth": growth_outcome(f)})
        ev.cache[key] = out
    return ev.cache[key]


# -- final models and fixed computations -----------------------------------------------------------
@torch.no_grad()
def pws_fan_var_error(model: torch.nn.Module) -> float:
    """max over PWS filters of |fan Var(K_i) - theory.pws_fan_var| / theory.pws_fan_var (float64)."""
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
def train_eval_gap(model: torch.nn.Module, x: torch.Tensor) -> float:
    """max |f_train(x) - f_eval(x)| / max |f_eval(x)| for one batch."""
    model.train()
    y_train = model(x)
    model.eval()
    y_eval = model(x)
    return float((y_train - y_eval).abs().max() / y_eval.abs().max())


def data_init_error(seed: int, size: int) -> float:
    """max over the convs ``init_alpha`` sets of |Var(y) - 2| / 2 on its batch (resnet8 PWS)."""
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


def _raw_grad_ratios(gamma: float, scale: float, seed: int) -> tuple[np.ndarray, PWSConv2d]:
    """Per filter ||dL/dV_i|| / ||dL/dK_i|| after V *= scale, for a random upstream gradient
    G = dL/dK on a float64 64x64x3x3 PWS conv; and the conv."""
    torch.manual_seed(seed)
    conv = PWSConv2d(64, 64, 3, gamma=gamma).double()
    with torch.no_grad():
        conv.weight.mul_(scale)
    kernel = conv.kernel()
    g = torch.randn_like(kernel)
    (gv,) = torch.autograd.grad(kernel, conv.weight, g)
    return (gv.flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1)).detach().numpy(), conv


def grad_ratio(gamma: float, scale: float, seed: int) -> float:
    """max_i of the per-filter ratio of :func:`_raw_grad_ratios` over its cap
    ``theory.pws_grad_scale_bound(alpha_i, gamma', fan)`` = c |alpha_i| / sqrt(gamma'): at most 1 for
    every raw weight by the theory, approached as V shrinks."""
    ratios, conv = _raw_grad_ratios(gamma, scale, seed)
    bound = theory.pws_grad_scale_bound(conv.alpha.detach().double().numpy().ravel(), conv.gamma_eff,
                                        conv.fan_value)
    return float(np.max(ratios / bound))


def grad_scale_growth(scale: float, seed: int) -> float:
    """Growth of max_i ||dL/dV_i|| / ||dL/dK_i|| when V is scaled by ``scale`` with gamma' = 0."""
    return float(_raw_grad_ratios(0.0, scale, seed)[0].max() / _raw_grad_ratios(0.0, 1.0, seed)[0].max())


def step_times(ev: Evidence, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per train step (bn, gn, pws) and per eval forward (deployed pws, plain+2GN)
    of the profile's speed ResNet, cached per seed (9a and 9b read the same timing)."""
    key = ("step_times", seed)
    if key not in ev.cache:
        p = ev.profile
        torch.manual_seed(seed)
        depth = int(p.speed_model.removeprefix("resnet"))
        x = torch.randn(p.speed_batch, 3, p.speed_size, p.speed_size)
        y = torch.randint(0, 10, (p.speed_batch,))
        timers = {s: train_step_fn(resnet_cifar(depth, s), x, y) for s in ("bn", "gn", "pws")}
        timers["eval:pws"] = eval_fn(reparameterize(resnet_cifar(depth, "pws")), x)
        timers["eval:plain"] = eval_fn(resnet_cifar(depth, "plain+gn"), x)
        med = interleaved_medians(timers, p.speed_rounds, seed)
        ev.cache[key] = ({s: med[s] for s in ("bn", "gn", "pws")}, {k: med[f"eval:{k}"] for k in ("pws", "plain")})
    return ev.cache[key]


def final_model(ev: Evidence, label: str, lr: float, seed: int) -> torch.nn.Module:
    """The final model of a run (``load_model``)."""
    return load_model(ev.get(label, lr, seed))

