"""Sinks: where a Probe's flushed tables go besides its Parquet run directory.

A sink is called with each flushed long-format table (``varprobe.probe.table.COLUMNS``: step,
layer, depth, mode, module_type, role, quantity, value) and closed once with the probe
(``Probe(model, out=DIR, sinks=[...])``). The Parquet run stays the source of truth; a sink only
mirrors it into a dashboard. The dashboards' packages are optional extras: ``TensorBoardSink``
needs ``varprobe[tensorboard]``, ``WandbSink`` needs ``varprobe[wandb]``; they are imported when a
sink is created, so ``import varprobe.sinks`` works without them.
"""
from .keys import scalar_rows
from .tensorboard import TensorBoardSink
from .wandb import WandbSink

__all__ = ["TensorBoardSink", "WandbSink", "scalar_rows"]
