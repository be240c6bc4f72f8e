"""Probes: per-layer variance, the shift of the average gradient and weight statistics during training.

``Probe`` records a long-format table over training; ``spp`` gives the signal-propagation table of one
forward; ``log_schedule`` spaces recorded steps logarithmically; ``Tap`` marks a residual add in a
user model; ``QUANTITIES`` defines every recorded quantity; ``register_layout`` tells probes what to
record of a module type (``varprobe.layouts``).
"""
from ..layouts import register_layout
from .probe import Probe
from .quantities import PRESETS, QUANTITIES, describe
from .schedule import log_schedule
from .spp import spp
from .tap import Tap

__all__ = ["Probe", "spp", "log_schedule", "Tap", "QUANTITIES", "PRESETS", "describe", "register_layout"]
