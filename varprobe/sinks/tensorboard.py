"""``TensorBoardSink``: a probe's tables as TensorBoard scalars, beside the Parquet run."""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from .keys import check_modes, check_quantities, scalar_rows

__all__ = ["TensorBoardSink"]


def _hparam_value(v: Any) -> int | float | str | bool:
    return v if isinstance(v, (bool, int, float, str)) else str(v)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """``values`` with nested mappings flattened to dotted keys (``{"probe": {"every": 2}}`` ->
    ``{"probe.every": 2}``) and every value an hparam value."""
    out: dict[str, int | float | str | bool] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = _hparam_value(v)
    return out


class TensorBoardSink:
    """Write each flushed probe table as scalars with ``torch.utils.tensorboard.SummaryWriter``.

    Tags and values are those of :func:`varprobe.sinks.scalar_rows` (the scheme of
    ``varprobe.sinks.keys``): ``varprobe/<role>/<quantity>`` is the mean over the layers of one
    role of the quantity at that probe step (``per_layer=False``, the default, so a 60-layer net
    does not flood the UI, and a BatchNorm's output is never averaged with a conv's), e.g.
    ``varprobe/conv/out.var``, ``varprobe/norm/out.var``, ``varprobe/block/out.var`` (the residual
    stream); or ``varprobe/<quantity>/<layer>`` per layer (``per_layer=True``); loss and lr are
    ``varprobe/loss``, ``varprobe/lr``. Each scalar's step is the probe step. Train-mode rows only
    by default; ``modes=("train", "eval")`` also logs eval-mode rows under ``varprobe/eval/``.

    ``hparams``: the run configuration, written once into the SAME event directory as the scalars
    through ``torch.utils.tensorboard.summary.hparams`` and ``writer.file_writer.add_summary``
    (``SummaryWriter.add_hparams`` would create a separate sub-run). Nested mappings become dotted
    keys (``probe.every``); values that are not bool/int/float/str are written as their ``str``.
    Without ``hparams``, the run configuration a probe hands to :meth:`open` when it attaches (the
    ``config`` of its ``meta.json``: ``meta``, and the probe's settings under ``probe.``) is written
    instead, once; so the Lightning and Hugging Face callbacks write their run's config.

    ``quantities``: names or globs of ``varprobe.probe.QUANTITIES`` to log (None: all recorded);
    an unknown one raises ValueError naming it and the valid ones.
    Needs the ``tensorboard`` package (``pip install varprobe[tensorboard]``).
    """

    def __init__(self, log_dir: str | os.PathLike, quantities: str | Iterable[str] | None = None,
                 per_layer: bool = False, hparams: Mapping[str, Any] | None = None, *,
                 modes: str | Iterable[str] = ("train",)) -> None:
        self.quantities = check_quantities(quantities, "TensorBoardSink")
        self.modes = check_modes(modes, "TensorBoardSink")
        self.per_layer = bool(per_layer)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch raises ImportError naming tensorboard
            raise ImportError("TensorBoardSink needs the tensorboard package: pip install "
                              f"'varprobe[tensorboard]' ({exc})") from exc
        self.log_dir = os.fspath(log_dir)
        self.writer = SummaryWriter(log_dir=self.log_dir)
        self._hparams_written = False
        if hparams:
            self.write_hparams(hparams)

    def write_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Write ``hparams`` (and optional ``metrics``) into this sink's event directory."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary
        for summary in hparams_summary(_flat({str(k): v for k, v in hparams.items()}), dict(metrics or {})):
            self.writer.file_writer.add_summary(summary)
        self._hparams_written = True

    def open(self, config: Mapping[str, Any]) -> None:
        """Write the probe's run ``config`` as hparams, unless hparams were written already (given
        to the constructor, or an earlier attach)."""
        if not self._hparams_written:
            self.write_hparams(config)

    def __call__(self, table: pd.DataFrame) -> None:
        rows = scalar_rows(table, quantities=self.quantities, per_layer=self.per_layer, modes=self.modes)
        for step, key, value in zip(rows["step"].tolist(), rows["key"].tolist(), rows["value"].tolist()):
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self, status: str | None = None, **fields: Any) -> None:
        """Flush and close the event file (the probe calls it once, with the run's status)."""
        self.writer.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.log_dir!r})"
