"""The paper's claims (paper-notes section 4) as rows: what is claimed, the quantity that tests it,
its kind (which fixes the statistic, ``varprobe.claims.summary``), the side of a fixed threshold it
predicts, where the threshold comes from, how it is measured, and the figures that show it.

Every threshold is fixed here before any experiment runs and comes from ``varprobe.theory`` where
the theory gives one. Claim ids are stable; a claim measured at several large learning rates gets
one row per rate, ``ID@LR``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .. import theory
from ..analysis.slopes import WIDTH_BAND
from . import measures as m
from .attribution import COMPARISONS
from .causes import EARLY_STEPS, OUTCOMES, PREDICTORS, ROWS, Row
from .measures import TRAINED, Evidence, accuracy as acc
from .profiles import ACCURACY_CONTROLS, MAIN_SCHEMES, accuracy_label
from . import widths as w

__all__ = ["Claim", "CLAIMS", "NULL_SHIFT_RATIO", "THEORY_INIT_ERROR"]

NULL_SHIFT_RATIO = theory.NULL_SHIFT_RATIO  # re-exported: the claims' name for it
# 12b: theory's growth of the PWS gradient scale with gamma' = 0 when V (so s) shrinks by 10.
_GROWTH_12B = float(theory.pws_grad_scale(1.0, 0.01, 0.0, 576) / theory.pws_grad_scale(1.0, 1.0, 0.0, 576))


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    quantity: str
    kind: str       # a key of varprobe.claims.summary.KINDS
    direction: str  # ">" or "<": the side of ``threshold`` the claim predicts
    threshold: float
    basis: str      # where the threshold comes from
    measure: Callable[[Evidence, int, float], Any]  # (evidence, seed, lr) -> one value
    at: str = "small"  # "small": at the small lr; "large": at every large lr; "none": no lr; "sweep": the
    # profile's width sweep (seeds of its sweep part; no row without one)
    figures: tuple[str, ...] = ()

    @property
    def expected(self) -> str:
        return f"{self.direction} {self.threshold:.4g} ({self.basis})"


def _final(label: str, key: str = "train_accuracy") -> Callable[[Evidence, int, float], float]:
    return lambda ev, seed, lr: acc(ev.get(label, lr, seed), key)


def _trained(label: str) -> Callable[[Evidence, int, float], bool]:
    return lambda ev, seed, lr: acc(ev.get(label, lr, seed)) >= TRAINED


def _failed(label: str) -> Callable[[Evidence, int, float], bool]:
    return lambda ev, seed, lr: not acc(ev.get(label, lr, seed)) >= TRAINED


def _pws_avg_grad(ev: Evidence, seed: int, lr: float) -> float:
    f = ev.frame("pws", lr, seed)
    return float((m.per_layer(f, "gw.avg_abs", min_depth=0) / m.per_layer(f, "gw.rms", min_depth=0)).max().max())


def _filter_mean_change(ev: Evidence, seed: int, lr: float) -> float:
    t = m.per_layer(ev.frame("extra:pws-no-wd", lr, seed), "w.filter_mean_abs", min_depth=0).dropna(how="all")
    return float(((t.iloc[-1] - t.iloc[0]).abs() / t.iloc[0].abs()).max())


def _batch_drop(ev: Evidence, scheme: str, seed: int) -> float:
    sizes = ev.profile.batch_sizes
    return (acc(ev.get(f"batch{max(sizes)}:{scheme}", None, seed), "test_accuracy")
            - acc(ev.get(f"batch{min(sizes)}:{scheme}", None, seed), "test_accuracy"))


def _paired_final(a: str, b: str, key: str = "test_accuracy"):
    return lambda ev, seed, lr: (acc(ev.get(a, lr, seed), key), acc(ev.get(b, lr, seed), key))


def _paired_accuracy(a: str, b: str, key: str = "test_accuracy"):
    """An accuracy row: ``a`` minus ``b`` read from the profile's headroom cells
    (``varprobe.claims.profiles.accuracy_label``) where it has them."""
    def measure(ev: Evidence, seed: int, lr: float) -> tuple[float, float]:
        return tuple(acc(ev.get(accuracy_label(ev.profile, label), lr, seed), key) for label in (a, b))
    return measure


_AT_ACCURACY_SIZE = ", at the profile's accuracy_size where it has one"


_TRAINED_TXT = f"final train accuracy >= {TRAINED} (chance 0.1)"
CLAIMS = [
    Claim("1a", "The average gradient of un-normalized conv filters is shifted",
          "plain, small lr: gw.shift_ratio, mean over convs after the first and over steps (every step)", "ratio",
          ">", 2 * NULL_SHIFT_RATIO, "twice sqrt(2/pi), the value for independent zero-mean gradient entries",
          lambda ev, s, lr: m.conv_mean(ev.frame("plain", lr, s), "gw.shift_ratio"), figures=("shift.png",)),
    Claim("1b", "The shift is mu * dL/db: it follows the bias gradient",
          "plain, small lr: gw.bias_corr (corr over filters of g_i and mu*dL/db_i), mean over convs after the first",
          "mean", ">", 0.5, "fixed: a majority of the variance explained",
          lambda ev, s, lr: m.conv_mean(ev.frame("plain", lr, s), "gw.bias_corr"), figures=("shift.png",)),
    Claim("1c", "The shift is sign-consistent across steps",
          "plain, small lr: gw.sign_persistence between consecutive steps, mean over convs and steps", "mean", ">",
          0.5, "0.5: random signs",
          lambda ev, s, lr: m.conv_mean(ev.frame("plain", lr, s), "gw.sign_persistence"), figures=("shift.png",)),
    Claim("1d", "BN removes the shift of the average gradient",
          "bn / plain ratio of mean gw.shift_ratio (same seed, small lr)", "ratio", "<", 0.5, "fixed: at least halved",
          lambda ev, s, lr: (m.conv_mean(ev.frame("bn", lr, s), "gw.shift_ratio")
                             / m.conv_mean(ev.frame("plain", lr, s), "gw.shift_ratio")), figures=("shift.png",)),
    Claim("2a", "PWS makes the raw weight's average gradient exactly zero",
          "pws: max over convs and steps of gw.avg_abs / gw.rms", "identity", "<", 1e-5, "float32 rounding",
          _pws_avg_grad, figures=("shift.png",)),
    Claim("2b", "Without weight decay, PWS raw filter means stay fixed",
          "pws, weight decay 0: max over convs of |relative change| of w.filter_mean_abs, first to last step",
          "identity", "<", 1e-4, "float32 rounding accumulated over the run", _filter_mean_change,
          figures=("shift.png",)),
    Claim("3a", "At a large lr the shift amplifies conv output variance in plain nets",
          "plain, large lr: growth factor of out.sq_mean, first to last recorded step, geometric mean over convs "
          "after the first", "ratio", ">", 1.0, "no growth",
          lambda ev, s, lr: m.log_growth(ev.frame("plain", lr, s), "out.sq_mean"), "large",
          ("amplification.png", "spp-large-lr.png")),
    Claim("3b", "The filter-sum (shift) term's share of E[y^2] grows (i.i.d. theory split)",
          "plain, large lr: change of mu^2*w.filter_sum_sq / (var*w.sq_norm + mu^2*w.filter_sum_sq), first to "
          "last step", "mean", ">", 0.0, "varprobe.theory.second_moment_split",
          lambda ev, s, lr: m.shift_share(ev.frame("plain", lr, s)), "large", ("amplification.png",)),
    Claim("4a", "Plain nets collapse at a large lr", f"plain, large lr: runs that fail (not {_TRAINED_TXT})",
          "outcome", ">", 0.5, "fixed: in most runs", _failed("plain"), "large", ("collapse.png",)),
    Claim("4b", "BN trains at the large lr", f"bn, large lr: runs that train ({_TRAINED_TXT})", "outcome", ">",
          0.5, "fixed: in most runs", _trained("bn"), "large", ("collapse.png",)),
    Claim("4c", "PWS trains at the large lr like BN", f"pws, large lr: runs that train ({_TRAINED_TXT})",
          "outcome", ">", 0.5, "fixed: in most runs", _trained("pws"), "large", ("collapse.png",)),
    Claim("4d", "WN alone does not prevent the collapse", f"wn, large lr: runs that fail (not {_TRAINED_TXT})",
          "outcome", ">", 0.5, "fixed: in most runs", _failed("wn"), "large", ("collapse.png",)),
    Claim("4e", "PWS trains where plain nets collapse",
          f"large lr: runs that train ({_TRAINED_TXT}), pws against plain", "outcome2", ">", 1.0,
          "odds ratio 1: no difference", lambda ev, s, lr: (_trained("pws")(ev, s, lr), _trained("plain")(ev, s, lr)),
          "large", ("collapse.png",)),
    Claim("5a", "WN does not cure the shift: its kernels' filter sums grow",
          "wn, large lr: rho = k.filter_sum_sq / k.sq_norm at the last step, mean over convs", "ratio", ">", 1.0,
          "E[rho] = 1 for He-initialised filters (varprobe.theory.wn_shift_ratio)",
          lambda ev, s, lr: float(m.rho(ev.frame("wn", lr, s)).dropna(how="all").iloc[-1].mean()), "large",
          ("filter-sums.png", "collapse.png")),
    Claim("5b", "Centering removes the filter sum exactly", "centered, large lr: max rho over convs and steps",
          "identity", "<", 1e-6, "0 exactly, float32 rounding",
          lambda ev, s, lr: float(m.rho(ev.frame("centered", lr, s)).max().max()), "large", ("filter-sums.png",)),
    Claim("5c", "Centering alone removes most of the instability of WN",
          f"large lr: runs that train ({_TRAINED_TXT}), centered against wn", "outcome2", ">", 1.0,
          "odds ratio 1: no difference",
          lambda ev, s, lr: (_trained("centered")(ev, s, lr), _trained("wn")(ev, s, lr)), "large",
          ("filter-sums.png", "collapse.png")),
    Claim("6a", "PWS: fan * Var(kernel_i) = 2 alpha_i^2 s_i^2 / (s_i^2 + gamma') through training",
          "pws final model: max over filters of relative error against varprobe.theory.pws_fan_var", "identity",
          "<", 1e-4, "exact identity, float32 rounding",
          lambda ev, s, lr: m.pws_fan_var_error(m.final_model(ev, "pws", lr, s)), figures=("theory.png",)),
    Claim("6b", "PWS keeps He variance transmission through training; plain drifts",
          "alpha frozen, small lr: |log(r_last / r_first)|, r = out.ch_var / (in.var * k.sq_norm), pws against "
          "plain (same seed)", "paired", "<", 0.0, "theory: r is fixed by the kernel for i.i.d. inputs",
          lambda ev, s, lr: (m.transmission_drift(ev.frame("extra:pws-frozen-alpha", lr, s), "k.sq_norm"),
                             m.transmission_drift(ev.frame("plain", lr, s), "w.sq_norm")), figures=("theory.png",)),
    Claim("7a", "PWS is more robust to mini-batch size than BN",
          "test accuracy drop from the largest to the smallest batch (same samples, lr scaled), bn against pws",
          "paired", ">", 0.0, "no difference",
          lambda ev, s, lr: (_batch_drop(ev, "bn", s), _batch_drop(ev, "pws", s)), "none", ("batch.png",)),
    Claim("7b", "PWS changes little with the mini-batch size",
          "pws: test accuracy drop from the largest to the smallest batch", "mean", "<", 0.05, "fixed: 5 points",
          lambda ev, s, lr: _batch_drop(ev, "pws", s), "none", ("batch.png",)),
    Claim("8a", "PWS: train-mode and eval-mode outputs are equal",
          "pws final model: max |train - eval output| / max |output| on held-out images", "identity", "<", 1e-5,
          "float32 rounding", lambda ev, s, lr: m.train_eval_gap(m.final_model(ev, "pws", lr, s), ev.held_out),
          figures=("train-eval.png",)),
    Claim("8b", "BN: train and eval outputs differ", "bn final model: the same ratio", "ratio", ">", 1e-3, "fixed",
          lambda ev, s, lr: m.train_eval_gap(m.final_model(ev, "bn", lr, s), ev.held_out), figures=("train-eval.png",)),
    Claim("9a", "PWS trains faster per step than BN", "resnet: median train-step time pws / bn", "ratio", "<", 1.0,
          "equal speed", lambda ev, s, lr: m.step_times(ev, s)[0]["pws"] / m.step_times(ev, s)[0]["bn"], "none"),
    Claim("9b", "Deployed PWS costs what plain convs cost",
          "resnet eval: reparameterized pws / plain with the same 2 GroupNorms", "ratio", "<", 1.05, "fixed: 5%",
          lambda ev, s, lr: m.step_times(ev, s)[1]["pws"] / m.step_times(ev, s)[1]["plain"], "none"),
    Claim("10", "initalpha sets the first-batch output variance of its convs to exactly 2",
          "resnet pws: max over data-init convs of |Var(y) - 2| / 2 on that batch", "identity", "<", 1e-4,
          "exact by construction", lambda ev, s, lr: m.data_init_error(s, ev.profile.speed_size), "none"),
    Claim("11a", "Accuracy: PWS within 1 point of BN",
          "small lr: test accuracy pws minus bn (same seed)" + _AT_ACCURACY_SIZE, "paired", ">", -0.01, "fixed",
          _paired_accuracy("pws", "bn"), figures=("collapse.png",)),
    Claim("11b", "Accuracy: BN above GN", "small lr: test accuracy bn minus gn (same seed)" + _AT_ACCURACY_SIZE,
          "paired", ">", 0.0, "no difference", _paired_accuracy("bn", "gn"), figures=("collapse.png",)),
    Claim("11c", "Accuracy: PWS above plain",
          "small lr: test accuracy pws minus plain (same seed)" + _AT_ACCURACY_SIZE, "paired", ">", 0.0,
          "no difference", _paired_accuracy("pws", "plain"), figures=("collapse.png",)),
    Claim("12a", "gamma' bounds the PWS gradient scale when the raw weight shrinks",
          "gamma'=1e-3, V scaled by 0.01: max over filters ||dL/dV_i|| / (||dL/dK_i|| * "
          "varprobe.theory.pws_grad_scale_bound)", "identity", "<", 1.0, "varprobe.theory.pws_grad_scale_bound",
          lambda ev, s, lr: m.grad_ratio(1e-3, 0.01, s), "none"),
    Claim("12b", "Without gamma' the gradient scale grows as V shrinks",
          "gamma'=0: growth of max ||dL/dV_i|| / ||dL/dK_i|| when V is scaled by 0.1", "identity", ">",
          0.5 * _GROWTH_12B, f"half of varprobe.theory.pws_grad_scale's growth, {_GROWTH_12B:.4g}",
          lambda ev, s, lr: m.grad_scale_growth(0.1, s), "none"),
]
# Attribution (varprobe.claims.attribution): each comparison isolates one cause, on the profile's
# attribution net (a ResNet, where PWS keeps two GroupNorm layers), paired by seed.
def _headroom(c) -> bool:
    """Whether comparison ``c`` is an accuracy row read from the headroom cells (A3)."""
    return {c.treatment, c.control} <= set(ACCURACY_CONTROLS)


CLAIMS += [Claim(f"{c.key}-{tag}", f"{c.claim} ({tag} lr)",
                 f"attribution net, {tag} lr: final train accuracy, {c.treatment} minus {c.control} (same seed)"
                 + (_AT_ACCURACY_SIZE if _headroom(c) else ""),
                 "paired", ">", c.threshold, "no difference",
                 (_paired_accuracy if _headroom(c) else _paired_final)(f"ctl:{c.treatment}", f"ctl:{c.control}",
                                                                       "train_accuracy"),
                 tag, ("attribution.png",))
           for tag in ("large", "small") for c in COMPARISONS]
CLAIMS += [
    Claim("D1", "Where plain-net variance grows at a large lr, the filter-sum (shift) share of it grows",
          "attribution net, plain, large lr: change of sum dec.shift / sum dec.measured over convs after the "
          "first, first to last step", "mean", ">", 0.0, "no change",
          lambda ev, s, lr: m.shift_share_change(ev.frame("ctl:plain", lr, s)), "large", ("decomposition.png",)),
    Claim("D2", "With the average gradient projected out, the filter-sum share does not grow",
          "attribution net, plain+proj, large lr: the same change", "mean", "<", 0.01, "fixed: 1 point",
          lambda ev, s, lr: m.shift_share_change(ev.frame("ctl:plain+proj", lr, s)), "large", ("decomposition.png",)),
]

# The i.i.d. theory at initialization, per scheme: the first recorded step does not depend on the
# lr, so it is read from the run at the largest lr, which every scheme records with dec.pred_*
# ("all" or "causes"). Threshold fixed before running: a median error of 10%.
THEORY_INIT_ERROR = 0.10


def _theory_at_init(scheme: str) -> Callable[[Evidence, int, float], float]:
    return lambda ev, seed, lr: m.theory_error_at_init(ev.frame(scheme, max(ev.profile.lrs_large), seed))


CLAIMS += [Claim(f"T-{s}", f"The i.i.d. theory predicts this layer's output variance at initialization ({s})",
                 f"{s}, first recorded step, run at the largest lr: median over conv layers of |out.ch_var / "
                 "predicted - 1|, the prediction of varprobe.analysis.compare (per-channel, padding-aware)",
                 "mean", "<", THEORY_INIT_ERROR, "fixed: a median error of 10%", _theory_at_init(s), "none",
                 ("theory.png",))
           for s in MAIN_SCHEMES]


# The competing explanation (varprobe.claims.causes): across every run at a large lr, does the
# shift or the relative update size rank collapse (E1*) and variance growth (E2*)?
def _cause_measure(row: Row) -> Callable[[Evidence, int, float], list[tuple]]:
    def measure(ev: Evidence, seed: int, lr: float) -> list[tuple]:
        return [tuple(r[p] for p in row.predictors) + (r[row.outcome],) for r in m.cause_runs(ev, lr, seed)]
    return measure


def _cause_claim(row: Row) -> Claim:
    outcome, what = OUTCOMES[row.outcome][4], row.outcome.replace("growth", "variance growth")
    early = (f"early value: median over convs after the first of the mean over the first {EARLY_STEPS} recorded "
             "steps after step 0")
    runs = "every run at the large lr (main schemes and attribution controls)"
    stat = "AUC" if row.outcome == "collapse" else "Spearman r_s"
    name, quantity = PREDICTORS[row.predictors[0]]
    if len(row.predictors) == 1:
        text = f"{name.capitalize()} ({quantity}) ranks {what} across runs"
        measured = f"{runs}: {stat} of {quantity} ({early}) with {outcome}"
        basis = "no association" if row.outcome == "growth" else "0.5: no better than chance"
    else:
        text = f"{name.capitalize()} ({quantity}) ranks {what} better than the relative update size"
        measured = f"{runs}: {stat} of {quantity} minus that of w.update_ratio (same runs, {early}) with {outcome}"
        basis = "equal: neither predicts better"
    return Claim(row.id, text, measured, row.kind, ">", row.threshold, basis, _cause_measure(row), "large",
                 ("predictors.png",))


CLAIMS += [_cause_claim(r) for r in ROWS]


# Width sweeps (varprobe.claims.widths; issue 26): the profile's sweep part trains the plain
# simple_cnn (He fan-in convs, an N(0, 0.01) linear head) for two steps at each width and seed. Each
# row reads, per seed, one slope of log(statistic) on log(width) per layer. Fixed before any sweep
# ran: the band 1/4 of varprobe.analysis.slopes.WIDTH_BAND (half-way from 0 to the nearest other
# width exponent, 1/2) and the theory each row states.
_BAND_TXT = "the sweep's band 1/4 (varprobe.analysis.slopes.WIDTH_BAND: half-way to the nearest other exponent 1/2)"
CLAIMS += [
    Claim("W1", "At initialization every conv of the Kaiming plain net is width-stable",
          "width sweep, step 0: per conv the slope of log out.sq_mean on log width (theory: 0, "
          "varprobe.theory.init_sq_mean_slopes)", "slopes", "<", WIDTH_BAND, _BAND_TXT,
          lambda ev, s, lr: w.layer_slopes(ev, s, "out.sq_mean", 0, lambda r: w.select(r, "conv")), "sweep",
          (w.FIGURE,)),
    Claim("W2", "At initialization the fixed-variance output layer's E[y^2] grows with width as theory says (slope 1)",
          "width sweep, step 0: the linear head's slope of log out.sq_mean on log width minus theory's "
          "(varprobe.theory.init_sq_mean_slopes with each layer's init law read off its weights: 1 for N(0, 0.01) "
          "weights whose fan-in grows)", "slopes", "<", WIDTH_BAND, _BAND_TXT,
          lambda ev, s, lr: w.layer_slopes(ev, s, "out.sq_mean", 0, lambda r: w.select(r, "linear"), w.init_theory),
          "sweep", (w.FIGURE,)),
    Claim("W3", "Under a fixed lr the relative update of every conv after the first grows with width",
          "width sweep, step 1 (the first update, at the small lr): per conv after the first the slope of log "
          "w.update_ratio on log width (standard parametrization: ||dW|| ~ width, ||W|| ~ sqrt(width), slope 1/2)",
          "slopes", ">", WIDTH_BAND, _BAND_TXT,
          lambda ev, s, lr: w.layer_slopes(ev, s, "w.update_ratio", 1, lambda r: w.select(r, "conv", first=False)),
          "sweep", (w.FIGURE,)),
    Claim("W4", "Under a fixed lr the output layer's relative update is width-stable at the first step",
          "width sweep, step 1: the linear head's slope of log w.update_ratio on log width (N(0, 0.01) head: "
          "||dW|| and ||W|| both ~ sqrt(width), slope 0)", "slopes", "<", WIDTH_BAND, _BAND_TXT,
          lambda ev, s, lr: w.layer_slopes(ev, s, "w.update_ratio", 1, lambda r: w.select(r, "linear")), "sweep",
          (w.FIGURE,)),
]
