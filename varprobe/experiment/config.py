"""The configuration of one training run, validated, with its model and data builders.

Imports no torch: :class:`RunConfig` and its checks are plain Python, so that the command line
builds its options from them without loading torch; the builders import it when called.
"""
from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from ..vocabulary import PRESETS, SCHEMES
from .device import DEVICE_CHOICES, check_device
from .options import (check_fields, choice, flag, integer_in, non_negative_ints, number, one_of, option,
                      positive_int)

if TYPE_CHECKING:
    from torch import nn

    from ..data import Split

__all__ = ["RunConfig", "MODELS", "DATASETS", "build_model", "load_data", "check_config"]

MODELS = ("simple_cnn", "vgg", "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet34")
DATASETS = ("digits", "synthetic", "cifar10")
QUANTITY_PRESETS = tuple(PRESETS)  # "all", "forward", "causes": the probe's presets
#: The largest float32, (2 - 2**-23) * 2**127 (``torch.finfo(torch.float32).max``): SGD applies lr and
#: weight_decay to float32 parameters.
FLOAT32_MAX = (2 - 2**-23) * 2.0**127
_FLOAT32 = (lambda v: v <= FLOAT32_MAX,
            f"at most {FLOAT32_MAX:.4g} (the largest float32: SGD applies it to float32 weights)")
#: The smallest positive normal float32, 2**-126 (``torch.finfo(torch.float32).tiny``): a smaller lr
#: is (nearly) 0 once applied to float32 weights.
FLOAT32_TINY = 2.0**-126
_NOT_UNDERFLOWING = (lambda v: v >= FLOAT32_TINY,
                     f"at least {FLOAT32_TINY:.4g} (the smallest normal float32: a smaller lr underflows "
                     "to 0 on float32 weights)")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Two runs with equal configs (and the same torch version and
    thread count) produce bit-identical records. Each field's metadata holds its help text and range
    check (``varprobe.experiment.options``), from which the command line builds its options.

    Attributes:
        model: "simple_cnn", "vgg" (``vgg_cifar``), "resnet<6n+2>" (``resnet_cifar``) or "resnet34"
            (``resnet34_cifar``, the official PyTorch CIFAR backbone; not 6n+2).
        scheme: one of ``varprobe.layers.SCHEMES``.
        data: "digits" (bundled), "synthetic" (labelled synthetic images) or "cifar10" (local copy).
        size: image side: digits 8, 16 or 32; synthetic any; cifar10 must be 32. None: 8 for digits
            with simple_cnn, 16 otherwise (32 for cifar10).
        channels: image channels: digits 1 or 3 (the grey channel repeated); synthetic 1 or 3; cifar10
            must be 3. None: 1 for digits, 3 otherwise.
        width: base width of the model (None: the model's default).
        lr, batch_size, steps, seed: SGD learning rate (constant unless ``lr_milestones``), mini-batch
            size, number of optimizer steps, seed of the initialisation and of the batch order.
        momentum, weight_decay: SGD momentum and weight decay (never applied to PWS alpha).
        lr_milestones: steps at which the learning rate is multiplied by 0.1.
        gamma, gamma_mode: PWS gamma and its mode (None: the layer default, 1e-3 raw); 0 is allowed.
        freeze_alpha: PWS alpha fixed at its initial value (not trained).
        init_alpha: run ``varprobe.layers.init_alpha`` on the first batch before training.
        project_shift: remove the per-filter mean of every conv weight's gradient before each
            optimizer step (``project_filter_mean_``), with any scheme: the shift of the average
            gradient taken out and nothing else changed. Momentum and weight decay act on the
            projected gradient; the probe records it (``gw.avg_abs`` is zero up to rounding).
        every: probe every k steps; quantities: "all", "forward" or "causes" (``varprobe.probe.PRESETS``).
        flush_every: recorded steps buffered between writes to disk: a killed run loses at most
            the steps recorded since its last flush (the values themselves do not depend on it).
        eval_steps: steps at which a fixed held-out batch (the first ``eval_batch`` test images) is
            probed in eval mode, before that step's update.
        collapse_var: the run stops as "collapsed" when the variance of the logits over the batch
            exceeds this bound (or the loss is not finite). 1e6 is far beyond any trained net's logits.
        threads: torch CPU threads (None: leave as is; a parallel grid pins each worker to
            cores // jobs, and meta.json's ``threads`` says what a run used).
        device: "cpu", "cuda" (a GPU: in a parallel grid worker k uses GPU k mod n), "cuda:N" (GPU N)
            or "auto" (CUDA when available, else the CPU). The model, the data and the probe live
            there; ``meta.json`` records the device used (``device``) and the determinism settings
            (``determinism``, see ``varprobe.experiment.device.make_deterministic``).
        data_limit: keep at most this many training and test images (cifar10/synthetic size control).
        synthetic_n: number of synthetic images.
    """

    model: str = field(default="simple_cnn", metadata=option(
        f"network: {', '.join(MODELS)} (vgg is vgg_cifar, resnetN is resnet_cifar(N), resnet34 is "
        "resnet34_cifar)", "NAME", choice(MODELS)))
    scheme: str = field(default="pws", metadata=option(
        f"normalization scheme of every conv: {', '.join(SCHEMES)}", "SCHEME", choice(SCHEMES)))
    data: str = field(default="digits", metadata=option(
        f"data set: {', '.join(DATASETS)} (digits: sklearn's 8x8 digits, bundled; synthetic: labelled "
        "synthetic images; cifar10: a local copy in ./data/cifar-10-batches-py, never downloaded)", "NAME",
        choice(DATASETS)))
    size: int | None = field(default=None, metadata=option(
        "image side in pixels: digits 8, 16 or 32; cifar10 32; synthetic any", "PX", positive_int(optional=True),
        "8 for digits with simple_cnn, 32 for cifar10, else 16"))
    channels: int | None = field(default=None, metadata=option(
        "image channels: 1 or 3 (digits: the grey channel repeated to 3); cifar10 3", "C",
        one_of((1, 3, None), "1, 3 or None"), "1 for digits, else 3"))
    width: int | None = field(default=None, metadata=option(
        "base channel width of the model", "CHANNELS", positive_int(optional=True), "the model's own"))
    lr: float = field(default=0.05, metadata=option(
        "SGD learning rate, constant unless --lr-milestones", "LR",
        number((lambda v: v > 0, "> 0"), _NOT_UNDERFLOWING, _FLOAT32)))
    batch_size: int = field(default=64, metadata=option("mini-batch size, images per step", "N", positive_int()))
    steps: int = field(default=300, metadata=option(
        "number of SGD steps (optimizer updates, not epochs)", "N", positive_int()))
    seed: int = field(default=0, metadata=option(
        "seed of the initialisation, the train/test split and the batch order", "SEED",
        integer_in(0, 2**32, "a non-negative integer below 2**32")))
    momentum: float = field(default=0.9, metadata=option(
        "SGD momentum", "M", number((lambda v: v >= 0, ">= 0"), (lambda v: v < 1, "< 1"))))
    weight_decay: float = field(default=5e-4, metadata=option(
        "SGD weight decay (L2 coefficient), never applied to PWS alpha", "WD",
        number(_FLOAT32, (lambda v: v >= 0, ">= 0"))))
    lr_milestones: tuple[int, ...] = field(default=(), metadata=option(
        "comma-separated steps at which the learning rate is multiplied by 0.1, e.g. 150,225", "STEPS",
        non_negative_ints, "none: constant lr"))
    gamma: float | None = field(default=None, metadata=option(
        "PWS gamma (scheme pws only; 0 allowed)", "GAMMA", number((lambda v: v >= 0, ">= 0"), optional=True),
        "the layer's own, 1e-3"))
    gamma_mode: str = field(default="raw", metadata=option(
        "how PWS reads --gamma: raw (gamma' = gamma) or equiv (gamma' = 2 gamma / fan)", "MODE",
        choice(("raw", "equiv"))))
    freeze_alpha: bool = field(default=False, metadata=option(
        "keep PWS alpha at its initial value (not trained)", check=flag))
    init_alpha: bool = field(default=False, metadata=option(
        "set PWS alpha from the first batch (varprobe.layers.init_alpha) before training", check=flag))
    project_shift: bool = field(default=False, metadata=option(
        "remove the per-filter mean of every conv weight's gradient before each SGD step: the shift of the "
        "average gradient taken out, nothing else changed (any scheme)", check=flag))
    every: int = field(default=1, metadata=option("probe every K steps", "K", positive_int()))
    flush_every: int = field(default=50, metadata=option(
        "write to disk every K recorded steps: a killed run keeps every step up to its last write", "K",
        positive_int()))
    quantities: str = field(default="all", metadata=option(
        f"what the probe records: {', '.join(QUANTITY_PRESETS)} (forward: activation statistics, loss and lr "
        "only; faster)", "PRESET", choice(QUANTITY_PRESETS)))
    eval_steps: tuple[int, ...] = field(default_factory=tuple, metadata=option(
        "comma-separated steps at which a fixed held-out batch (the first --eval-batch test images) is probed "
        "in eval mode, before that step's update, e.g. 0,100,299", "STEPS", non_negative_ints, "none"))
    eval_batch: int = field(default=256, metadata=option(
        "size of the held-out batch probed at --eval-steps, in images", "N", positive_int()))
    collapse_var: float = field(default=1e6, metadata=option(
        "stop the run as 'collapsed' when the variance of the logits over a batch exceeds this bound (or the "
        "loss is not finite)", "VAR", number((lambda v: v > 0, "> 0"))))
    threads: int | None = field(default=None, metadata=option(
        "torch CPU threads; runs with the same config, torch version and thread count are bit-identical", "N",
        integer_in(1, 1025, "a positive integer up to 1024", optional=True), "torch's default"))
    device: str = field(default="auto", metadata=option(
        f"where the model, data and probe live: {', '.join(DEVICE_CHOICES)} (auto: CUDA when available; in a "
        "parallel grid worker k uses GPU k mod n)", "DEVICE", lambda name, value: check_device(value)))
    data_limit: int | None = field(default=None, metadata=option(
        "keep at most N training and N test images", "N", positive_int(optional=True), "all"))
    synthetic_n: int = field(default=2000, metadata=option(
        "number of images of --data synthetic", "N", positive_int()))

    def __post_init__(self) -> None:
        check_fields(self)  # each field's own range (experiment.options), then the rules across fields
        outside = [s for s in tuple(self.eval_steps) + tuple(self.lr_milestones) if not 0 <= s < self.steps]
        if outside:
            raise ValueError(f"eval_steps and lr_milestones must lie in [0, steps={self.steps}), got {outside}")
        if self.gamma is not None and self.scheme != "pws":
            raise ValueError(f"gamma applies to scheme 'pws' only, got scheme {self.scheme!r}")
        if self.data == "digits" and self.size not in (None, 8, 16, 32):
            raise ValueError(f"digits size must be 8, 16 or 32, got {self.size!r}")
        if self.data == "cifar10" and self.size not in (None, 32):
            raise ValueError(f"cifar10 size must be 32, got {self.size!r}")
        if self.data == "cifar10" and self.channels not in (None, 3):
            raise ValueError(f"cifar10 channels must be 3, got {self.channels!r}")
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))
        object.__setattr__(self, "eval_steps", tuple(self.eval_steps))

    @property
    def image_size(self) -> int:
        if self.size is not None:
            return self.size
        if self.data == "cifar10":
            return 32
        return 8 if (self.data == "digits" and self.model == "simple_cnn") else 16

    @property
    def image_channels(self) -> int:
        if self.channels is not None:
            return self.channels
        return 1 if self.data == "digits" else 3

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_milestones"], d["eval_steps"] = list(self.lr_milestones), list(self.eval_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})


@functools.lru_cache(maxsize=8)
def load_data(data: str, size: int, seed: int, limit: int | None, synthetic_n: int, channels: int | None = None
              ) -> Split:
    """The data set of a run (cached: runs of a grid share it). Test/train split by ``seed``.
    ``channels``: as ``RunConfig.channels`` (None: 1 for digits, 3 otherwise)."""
    from ..data import Split, cifar10, digits, synthetic

    if data == "digits":
        split = digits(size=size, channels=channels or 1, seed=seed)
    elif data == "synthetic":
        split = synthetic(synthetic_n, size, channels or 3, 10, seed)
    else:
        split = cifar10(limit=limit)
    if limit is not None and data != "cifar10":
        split = Split(split.name, split.x_train[:limit], split.y_train[:limit], split.x_test[:limit],
                      split.y_test[:limit], split.num_classes)
    return split


def build_model(config: RunConfig, in_channels: int, num_classes: int) -> nn.Module:
    """The model named by ``config`` with its scheme, width and PWS options."""
    from ..models import resnet34_cifar, resnet_cifar, simple_cnn, vgg_cifar

    options = {}
    if config.gamma is not None:
        options["gamma"] = config.gamma
    if config.scheme == "pws" and config.gamma_mode != "raw":
        options["gamma_mode"] = config.gamma_mode
    if config.width is not None:
        options["width"] = config.width
    if config.model == "simple_cnn":
        return simple_cnn(config.scheme, num_classes, in_channels, **options)
    if config.model == "vgg":
        return vgg_cifar(config.scheme, num_classes, in_channels, **options)
    if config.model == "resnet34":
        return resnet34_cifar(config.scheme, num_classes, in_channels=in_channels, **options)
    depth = int(re.fullmatch(r"resnet(\d+)", config.model).group(1))
    return resnet_cifar(depth, config.scheme, num_classes, in_channels=in_channels, **options)


#: Candidate values tried to say which widths and image sizes would work.
_WIDTHS = tuple(range(1, 129))
_SIZES = {"digits": (8, 16, 32), "cifar10": (32,), "synthetic": (4, 8, 12, 16, 24, 32, 48, 64)}
_SHOWN = 6


def check_config(config: RunConfig) -> None:
    """Refuse, before anything starts, a config that ``RunConfig`` alone cannot see is unusable.

    Loads the config's data (cached) and builds its model once, on a throwaway copy with the global
    RNG state saved and restored, running one training-mode forward of a random batch of
    ``min(batch_size, 2)`` images of the configured shape (batch, channels, size, size).

    Raises:
        ValueError: naming the fields and what would be valid: ``batch_size`` larger than the
            training set (``data``, ``data_limit``); a ``model``/``scheme``/``width`` that cannot be
            built (e.g. GroupNorm groups that do not divide the width: the widths that build are
            listed); a ``model``/``width`` that cannot take ``size`` x ``size`` images (a kernel
            larger than its input: the sizes that work are listed); a batch too small for the
            model's normalization (one image per channel under BatchNorm).
        FileNotFoundError: the data set is missing (a CIFAR-10 folder), as from :func:`load_data`.
    """
    split = load_data(config.data, config.image_size, config.seed, config.data_limit, config.synthetic_n,
                      config.image_channels)
    n_train = len(split.x_train)
    if config.batch_size > n_train:
        limit = f" with data_limit {config.data_limit}" if config.data_limit is not None else ""
        larger = [name for name, applies in (("data_limit", config.data_limit is not None),
                                             ("synthetic_n", config.data == "synthetic")) if applies]
        raise ValueError(f"batch_size {config.batch_size} is larger than the training set ({n_train} images of "
                         f"data {config.data!r}{limit}); valid: batch_size <= {n_train}"
                         + "".join(f", or a larger {name}" for name in larger))
    model = (config.model, config.scheme, config.width, config.gamma, config.gamma_mode,
             split.in_channels, split.num_classes)
    problem = _build_problem(model, config.image_size, min(config.batch_size, 2))
    if problem is None:
        return
    stage, message = problem
    net = (f"model {config.model!r} with scheme {config.scheme!r} and "
           + ("the default width" if config.width is None else f"width {config.width}"))
    if stage == "build":
        ok = _first_that_work(lambda w: _build_problem((*model[:2], w, *model[3:]), None, 0) is None, _WIDTHS)
        valid = f"widths that build: {', '.join(map(str, ok))}{', ...' * (len(ok) == _SHOWN)}" if ok else "no width from 1 to 128 builds"
        raise ValueError(f"{net} cannot be built: {message}; {valid}")
    if config.batch_size < 2 and _build_problem(model, config.image_size, 2) is None:
        raise ValueError(f"batch_size {config.batch_size} is too small for {net}: {message}; "
                         "valid: batch_size >= 2")
    sizes = [s for s in _SIZES.get(config.data, ()) if s != config.image_size]
    ok = _first_that_work(lambda s: _build_problem(model, s, 2) is None, sizes)
    valid = (f"sizes that work for data {config.data!r}: {', '.join(map(str, ok))}" if ok
             else f"no size of data {config.data!r} works; try a larger width or another model")
    raise ValueError(f"{net} cannot take {config.image_size}x{config.image_size} images (size): {message}; {valid}")


@functools.lru_cache(maxsize=256)
def _build_problem(model: tuple, size: int | None, batch: int) -> tuple[str, str] | None:
    """None if the model of ``model`` = (model, scheme, width, gamma, gamma_mode, in_channels,
    num_classes) builds and, for a ``size``, runs a training-mode forward of ``batch`` random images
    of that size; else ("build" or "forward", the first line of the error)."""
    import torch

    name, scheme, width, gamma, gamma_mode, in_channels, num_classes = model
    config = RunConfig(model=name, scheme=scheme, width=width, gamma=gamma, gamma_mode=gamma_mode)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            net = build_model(config, in_channels, num_classes)
        except (ValueError, RuntimeError, TypeError) as exc:
            return "build", _first_line(exc)
        if size is None:
            return None
        x = torch.randn(batch, in_channels, size, size)
        try:
            with torch.no_grad():
                net.train()(x)
        except (ValueError, RuntimeError) as exc:
            return "forward", _first_line(exc)
    return None


def _first_that_work(works, candidates) -> list:
    found = []
    for c in candidates:
        if works(c):
            found.append(c)
            if len(found) == _SHOWN:
                break
    return found


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
