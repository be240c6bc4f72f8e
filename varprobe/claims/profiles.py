"""Scales of ``varprobe reproduce`` and the runs each needs, with what each run records.

A profile fixes the network, data, steps, seeds and learning rates (the first is the small one,
the others the large ones) before anything runs. :func:`plan` turns it into experiments (grids),
and records in each run only what the claims and figures that read it need:

* every step, all quantities: plain at the small lr (1c compares the average gradient's sign
  between consecutive steps);
* every ``every`` steps, all quantities: the runs whose gradients, weights, kernels or
  decompositions a claim reads (1a-1d, 2a, 2b, 3a, 3b, 5a, 5b, 6b, D1, D2; figures);
* every ``every`` steps, ``quantities="forward"``: runs read only for their final accuracy and
  output statistics (4b, 11b, A5, A6, every A* at the small lr, the collapse and
  signal-propagation figures) at the small lr;
* every ``every`` steps, ``quantities="causes"`` (outputs, gw.shift_ratio, dec.*,
  w.update_ratio; no gradient hooks): the same runs at the large lrs, where E1*, E2* rank every
  run's shift against its relative update size (``varprobe.claims.causes``);
* never: the batch-size runs (7a, 7b read the final test accuracy only), and the headroom cells
  of the accuracy rows (11a-11c, A3) where a profile has them (``Profile.accuracy_size``: they
  read the final accuracy only);
* the width sweep (:class:`SweepPart`, rows W1-W4, ``varprobe.claims.widths``): every step, all
  quantities, for the two steps its rows read (initialization and the first update).

An attribution control that is a main scheme on the main network (plain, centered, pws when the
attribution net is the main net) is the main run itself, recorded as the main runs are.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from ..experiment.config import RunConfig
from .attribution import CONTROLS

__all__ = ["Profile", "SweepPart", "PROFILES", "MAIN_SCHEMES", "ACCURACY_SCHEMES", "ACCURACY_CONTROLS",
           "accuracy_label", "accuracy_setting", "Experiment", "plan", "configs", "estimate_minutes",
           "measured_step_seconds"]

MAIN_SCHEMES = ("plain", "bn", "gn", "wn", "centered", "pws")
#: The cells the accuracy rows compare: 11a-11c the main schemes' final test accuracy at the small
#: lr, A3 the attribution controls plain+gn+proj against plain+gn (final train accuracy).
ACCURACY_SCHEMES = ("plain", "bn", "gn", "pws")
ACCURACY_CONTROLS = ("plain+gn", "plain+gn+proj")


@dataclass(frozen=True)
class SweepPart:
    """The width sweep of a profile (``varprobe.experiment.sweep``; rows W1-W4): ``model`` with
    ``scheme`` at each of ``widths`` with seeds 0 .. ``seeds`` - 1, ``steps`` steps at the
    profile's small lr, on the profile's data, batch and threads, every step recorded with all
    quantities."""

    widths: tuple[int, ...]
    seeds: int
    steps: int = 2  # the rows read step 0 (initialization) and step 1 (the first update)
    model: str = "simple_cnn"
    scheme: str = "plain"

    def __post_init__(self) -> None:
        from ..experiment.sweep import check_widths

        check_widths(self.widths)
        if self.seeds < 2 or self.steps < 2:
            raise ValueError(f"a sweep part needs seeds >= 2 (an interval) and steps >= 2 (a first update), got "
                             f"seeds={self.seeds}, steps={self.steps}")

    def base(self, p: "Profile") -> RunConfig:
        """The sweep's runs but for the width and seed."""
        return p.base().replace(model=self.model, scheme=self.scheme, width=None, steps=self.steps, every=1,
                                quantities="all", eval_steps=())


@dataclass(frozen=True)
class Profile:
    """Scale of the experiments. Learning rates, steps and thresholds are fixed per profile.

    ``accuracy_size``: the image side of the accuracy rows' cells (11a-11c: :data:`ACCURACY_SCHEMES`
    at the small lr; A3: :data:`ACCURACY_CONTROLS` on the attribution net at its learning rates),
    run apart from the main runs (labels "acc:<scheme>", "acc:ctl:<control>") with the same
    network, steps, seeds and learning rates; None: those rows read the main runs. It gives an
    accuracy difference room where every scheme reaches nearly 100% at ``size``, and is fixed
    with the profile, before its verdicts are read. It must be an image side the data allows
    (``RunConfig``'s own check: digits 8, 16 or 32).
    """

    name: str
    model: str
    data: str
    size: int
    width: int | None
    steps: int
    seeds: int
    lrs: tuple[float, ...]        # (small, large, ...): the first is the small one
    batch_size: int
    every: int                    # the sparse recording interval
    batch_sizes: tuple[int, ...]  # claim 7
    samples: int                  # claim 7: training samples seen at every batch size
    speed_model: str
    speed_size: int
    speed_batch: int
    speed_rounds: int
    threads: int = 2  # torch CPU threads; 1 is faster when other processes share the cores
    attribution_model: str = "resnet8"  # a ResNet: PWS keeps two GroupNorms there, plain+gn differs from plain
    attribution_size: int = 8
    channels: int | None = None
    control_lrs: str = "all"      # "all" or "large": where the attribution controls run
    accuracy_size: int | None = None  # image side of the accuracy rows' cells; None: the main runs'
    sweep: SweepPart | None = None  # the width sweep (rows W1-W4); None: no sweep rows

    def __post_init__(self) -> None:
        if len(self.lrs) < 2 or any(lr <= self.lrs[0] for lr in self.lrs[1:]):
            raise ValueError(f"lrs must be (small, large, ...) with every large one above the small, got {self.lrs}")
        if self.control_lrs not in ("all", "large"):
            raise ValueError(f"control_lrs must be 'all' or 'large', got {self.control_lrs!r}")
        size = self.accuracy_size
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"accuracy_size must be None or a positive image side in pixels, got "
                                 f"{self.accuracy_size!r}")
            try:
                self.base().replace(size=self.accuracy_size)
            except ValueError as exc:  # the data's own sizes (digits: 8, 16 or 32; cifar10: 32)
                raise ValueError(f"accuracy_size {self.accuracy_size}: {exc}") from None

    @property
    def lr_small(self) -> float:
        return self.lrs[0]

    @property
    def lrs_large(self) -> tuple[float, ...]:
        return self.lrs[1:]

    @property
    def lrs_controls(self) -> tuple[float, ...]:
        return self.lrs if self.control_lrs == "all" else self.lrs_large

    def base(self) -> RunConfig:
        return RunConfig(model=self.model, data=self.data, size=self.size, channels=self.channels, width=self.width,
                         steps=self.steps, lr=self.lr_small, batch_size=self.batch_size, every=self.every,
                         eval_steps=(0, self.steps - 1), threads=self.threads)


# The width sweeps, fixed before any sweep row was measured (issue 26). The rows read the slope of a
# statistic over the widths, whose noise comes from the weight draw: an a-priori estimate (the
# filter-sum term of a ReLU input is one chi-square(1) per channel, about a third of E[y^2]) put the
# per-seed slope's standard deviation of the deepest conv near 0.17 over widths 8-64, so a 95%
# interval of half-width about 0.11 needs 12 seeds, below the band's 0.25. Widths 8-64: width 128
# alone took 2/3 of the sweep's time here (6.5 s a run against 2 s at 64, loaded machine). Measured
# cost with --jobs 2: see the report's setting line.
QUICK_SWEEP = SweepPart(widths=(8, 16, 32, 64), seeds=12)
STANDARD_SWEEP = SweepPart(widths=(8, 16, 32, 64, 128), seeds=16)
PROFILES = {
    "tiny": Profile("tiny", "resnet8", "digits", 8, 8, 12, 2, (0.02, 0.2), 32, 3, (4, 16), 128,
                    "resnet8", 8, 8, 2, threads=1, attribution_size=8),
    # make demo: resnet8 (PWS keeps GroupNorm at stem and neck, as in the authors' ResNets) on 8px digits.
    "quick": Profile("quick", "resnet8", "digits", 8, None, 150, 3, (0.02, 0.2), 64, 5, (2, 8, 32), 1536,
                     "resnet8", 16, 32, 5, attribution_size=8, sweep=QUICK_SWEEP),
    # The paper's setting at laptop scale: the authors' ResNet-20 layout on digits in 3 channels.
    # Fixed before the first standard run, from the budget (30 min with --jobs 2 on 2 cores): at
    # 16 px the step times measured here put it at about 33 min, so the digits stay at their native
    # 8 px (the network, its layout, the steps and the learning rates unchanged). 6 seeds: with 5,
    # a claim "in most runs" cannot hold even at 5/5 (the exact lower bound is 0.478 < 0.5).
    # accuracy_size=16, fixed before these rows' verdicts were read (issue 25): at 8 px every scheme
    # ends near 100%, which leaves an accuracy difference (11a-11c, A3) no room. Measured here on
    # the control side only (plain at lr 0.01, plain+gn at 0.1 and 0.5; 2 seeds, 1 thread): plain's
    # test accuracy 0.96-0.98 at 8 px, 0.89-0.94 at 16 px; plain+gn's train accuracy 0.95-0.99 at
    # lr 0.1 and 0.56-0.89 at 0.5 at 16 px. A 16 px run takes about 2.1x an 8 px one (29-39 s
    # against 14-17 s here, 300 steps): the 48 headroom runs (recording nothing) add about 45% to
    # the 234 runs, about 20 min instead of 14 with --jobs 2, within the 30-min budget. 100 steps
    # at 8 px left plain at 0.96 (no room); 400 training images at 8 px gave plain 0.93-0.95 test
    # accuracy at the cost of an 8 px run, but cannot lower a train accuracy (A3).
    "standard": Profile("standard", "resnet20", "digits", 8, None, 300, 6, (0.01, 0.1, 0.5), 64, 10, (4, 16, 64),
                        3200, "resnet20", 8, 64, 5, attribution_model="resnet20", attribution_size=8, channels=3,
                        control_lrs="large", accuracy_size=16, sweep=STANDARD_SWEEP),
    "full": Profile("full", "resnet20", "cifar10", 32, None, 2000, 3, (0.02, 0.2), 128, 20, (2, 8, 32, 128),
                    40000, "resnet20", 32, 128, 9, attribution_model="resnet20", attribution_size=32),
}


@dataclass(frozen=True)
class Experiment:
    """One grid: ``base`` x ``schemes`` x ``lrs`` x ``seeds``. Its runs are keyed by
    (``label`` with "{scheme}" filled in, lr or None when not ``keyed_by_lr``, seed)."""

    label: str
    base: RunConfig
    schemes: tuple[str, ...] | None
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    keyed_by_lr: bool = True


# (scheme, at the small lr) -> recording of the main runs: (every step?, quantities).
_MAIN_RECORDING = {
    ("plain", True): (True, "all"), ("bn", True): (False, "all"), ("pws", True): (False, "all"),
    ("gn", True): (False, "forward"), ("wn", True): (False, "forward"), ("centered", True): (False, "forward"),
    ("plain", False): (False, "all"), ("wn", False): (False, "all"), ("centered", False): (False, "all"),
    ("pws", False): (False, "all"), ("bn", False): (False, "causes"), ("gn", False): (False, "causes"),
}
# Controls read for their final accuracy only (the decomposition figure does not show them), and at
# the large lrs for the predictors of E1*, E2* ("causes").
_FORWARD_CONTROLS = ("pws-frozen-alpha", "pws-no-wd")
# Controls that 2b and 6b read at the small lr on the main network ("extra:<label>").
_EXTRAS = ("pws-no-wd", "pws-frozen-alpha")


def plan(p: Profile) -> list[Experiment]:
    """Every grid ``reproduce`` runs for profile ``p``, in order."""
    seeds = tuple(range(p.seeds))
    base = p.base()
    out: list[Experiment] = []
    for small, lrs in ((True, (p.lr_small,)), (False, p.lrs_large)):
        groups: dict[tuple[bool, str], list[str]] = {}
        for s in MAIN_SCHEMES:
            groups.setdefault(_MAIN_RECORDING[(s, small)], []).append(s)
        for (every_step, quantities), schemes in groups.items():
            cfg = base.replace(every=1 if every_step else p.every, quantities=quantities)
            out.append(Experiment("{scheme}", cfg, tuple(schemes), lrs, seeds))
    for label in _EXTRAS:  # 2b and 6b, at the small lr
        out.append(Experiment(f"extra:{label}", base.replace(**CONTROLS[label]), None, (p.lr_small,), seeds))
    largest = max(p.batch_sizes)
    for b in p.batch_sizes:
        steps = max(1, p.samples // b)
        cfg = base.replace(batch_size=b, steps=steps, lr=p.lr_small * b / largest, every=steps + 1, eval_steps=())
        out.append(Experiment(f"batch{b}:{{scheme}}", cfg, ("bn", "gn", "pws"), (cfg.lr,), seeds, keyed_by_lr=False))
    if p.accuracy_size is not None:  # the accuracy rows' own cells: final accuracy only, nothing recorded
        acc = base.replace(size=p.accuracy_size, every=p.steps + 1, eval_steps=(), quantities="forward")
        out.append(Experiment(accuracy_label(p, "{scheme}"), acc, ACCURACY_SCHEMES, (p.lr_small,), seeds))
        for label in ACCURACY_CONTROLS:
            cfg = acc.replace(model=p.attribution_model, **CONTROLS[label])
            out.append(Experiment(accuracy_label(p, f"ctl:{label}"), cfg, None, p.lrs_controls, seeds))
    attribution = base.replace(model=p.attribution_model, size=p.attribution_size)
    same_net = (p.attribution_model, p.attribution_size) == (p.model, p.size)
    for small, lrs in ((True, (p.lr_small,) if p.control_lrs == "all" else ()), (False, p.lrs_large)):
        for label, changes in CONTROLS.items():
            if not lrs:
                continue
            if same_net and set(changes) == {"scheme"} and changes["scheme"] in MAIN_SCHEMES:
                # the main run of that scheme, recorded as the main runs are: run once, read twice
                every_step, quantities = _MAIN_RECORDING[(changes["scheme"], small)]
                every = 1 if every_step else p.every
            elif same_net and small and label in _EXTRAS:  # the extra run of 2b / 6b
                every, quantities = p.every, "all"
            else:  # at the small lr the A* rows read the final accuracy only
                every = p.every
                quantities = "forward" if small else "causes" if label in _FORWARD_CONTROLS else "all"
            cfg = attribution.replace(**changes, every=every, quantities=quantities)
            out.append(Experiment(f"ctl:{label}", cfg, None, lrs, seeds))
    return out


def accuracy_label(p: Profile, label: str) -> str:
    """The label of the run an accuracy row (11a-11c, A3) reads in place of ``label`` (a main
    scheme or "ctl:<control>"): its headroom cell "acc:<label>" where ``p`` has an
    ``accuracy_size``, else ``label`` itself."""
    return f"acc:{label}" if p.accuracy_size is not None else label


def accuracy_setting(p: Profile) -> str:
    """One sentence for the report's setting: where the accuracy rows' cells differ from the main
    runs, and why; "" when they read the main runs."""
    if p.accuracy_size is None:
        return ""
    return (f"Accuracy rows (11a-11c: {', '.join(ACCURACY_SCHEMES)} at the small lr; A3: "
            f"{' and '.join(ACCURACY_CONTROLS)} on the attribution net): runs of their own at {p.accuracy_size}px, "
            "otherwise the same, fixed before their verdicts were read, so that a difference in final accuracy "
            f"has room below 100% (at {p.size}px every scheme ends near it).")


#: What recording costs on top of a training step (measured with benchmarks/probe_overhead.py):
#: every step with all quantities, and every ``every`` steps.
_PROBE_FACTOR = {True: 1.6, False: 1.1}


def estimate_minutes(p: Profile, experiments: list[Experiment], jobs: int = 1,
                     step_seconds: Callable[[RunConfig], float] | None = None) -> float:
    """Wall-clock minutes to train the distinct runs of ``experiments`` with ``jobs`` at a time:
    the sum over runs of ``steps * step_seconds(run) * probe factor`` (1.6 for every-step
    recording, 1.1 for sparse), divided by ``jobs``. ``step_seconds`` defaults to
    :func:`measured_step_seconds`, which times real training steps on this machine."""
    step_seconds = step_seconds or measured_step_seconds
    seconds = sum(c.steps * step_seconds(c) * _PROBE_FACTOR[c.every == 1] for c in configs(experiments))
    return seconds / jobs / 60


@functools.lru_cache(maxsize=64)
def _time_steps(model: str, size: int, channels: int, batch_size: int, threads: int) -> float:
    from ..experiment.config import build_model
    from ..experiment.timing import interleaved_medians, train_step_fn

    before = torch.get_num_threads()
    rng = torch.get_rng_state()
    try:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        net = build_model(RunConfig(model=model, scheme="bn", size=size), channels, 10)
        x, y = torch.randn(batch_size, channels, size, size), torch.randint(0, 10, (batch_size,))
        return interleaved_medians({"step": train_step_fn(net, x, y, steps=2)}, rounds=3)["step"] / 2
    finally:
        torch.set_num_threads(before)
        torch.set_rng_state(rng)


def measured_step_seconds(c: RunConfig) -> float:
    """Seconds of one unprobed SGD step of ``c``'s model (the BN variant: the slowest scheme), batch
    and image size with ``c.threads`` threads, timed here (median of 3 rounds, cached per shape)."""
    return _time_steps(c.model, c.image_size, c.image_channels, c.batch_size, c.threads or 1)


def configs(experiments: list[Experiment]) -> list[RunConfig]:
    """The distinct run configs of ``experiments`` (a config two experiments share runs once)."""
    return list(dict.fromkeys(e.base.replace(scheme=s, lr=lr, seed=seed) for e in experiments
                              for s in (e.schemes or (e.base.scheme,)) for lr in e.lrs for seed in e.seeds))
