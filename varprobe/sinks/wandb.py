"""``WandbSink``: a probe's tables logged to a Weights & Biases run, beside the Parquet run."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from .keys import check_modes, check_quantities, scalar_rows

__all__ = ["WandbSink"]


class WandbSink:
    """Log each flushed probe table to a W&B run: one ``run.log(scalars, step=probe step)`` per
    recorded step, in increasing step order, with the keys of :func:`varprobe.sinks.scalar_rows`
    (those of :class:`~varprobe.sinks.TensorBoardSink`: ``varprobe/<role>/<quantity>`` averaged
    over the layers of one role by default, e.g. ``varprobe/conv/out.var``,
    ``varprobe/<quantity>/<layer>`` with ``per_layer=True``, eval rows as ``varprobe/eval/...``
    with ``modes=("train", "eval")``).

    ``run``: the ``wandb`` run (from ``wandb.init``), or None for the active run ``wandb.run`` at
    each call. W&B drops a ``log`` whose step is below the run's current step: when something else
    logs to the same run at larger steps (another logger counting batches, not optimizer steps),
    give the probe its own run. The sink never finishes the run: ``close`` leaves it to its owner.
    The probe calls :meth:`open` when it attaches: a finished run (or, with ``run=None``, no active
    run) is refused there, before any training, rather than at the first flush.
    Needs the ``wandb`` package (``pip install varprobe[wandb]``).
    """

    def __init__(self, run: Any = None, quantities: str | Iterable[str] | None = None,
                 per_layer: bool = False, *, modes: str | Iterable[str] = ("train",)) -> None:
        self.quantities = check_quantities(quantities, "WandbSink")
        self.modes = check_modes(modes, "WandbSink")
        self.per_layer = bool(per_layer)
        self._run = run
        if run is None:
            try:
                import wandb  # noqa: F401
            except ImportError as exc:
                raise ImportError(f"WandbSink needs the wandb package: pip install 'varprobe[wandb]' ({exc})") from exc

    @property
    def run(self) -> Any:
        """The run logged to: the one given, else the active ``wandb.run``."""
        if self._run is not None:
            return self._run
        import wandb
        if wandb.run is None:
            raise RuntimeError("WandbSink(run=None) logs to the active wandb run, and there is none: "
                               "call wandb.init(...) first or pass run=")
        return wandb.run

    def open(self, config: Mapping[str, Any] | None = None) -> None:
        """Raise RuntimeError (one line, naming the run) if there is no run to log to or it is
        finished (W&B ignores, and then refuses, ``log`` on a finished run). ``config`` is unused: the
        W&B run's config belongs to its owner."""
        run = self.run
        if getattr(run, "_is_finished", False):  # wandb has no public flag for it
            raise RuntimeError(f"the W&B run {getattr(run, 'id', run)!r} is finished and takes no more logs: "
                               "pass a run from a new wandb.init(...)")

    def __call__(self, table: pd.DataFrame) -> None:
        rows = scalar_rows(table, quantities=self.quantities, per_layer=self.per_layer, modes=self.modes)
        if rows.empty:
            return
        run = self.run
        for step, part in rows.groupby("step", sort=True):
            run.log(dict(zip(part["key"].tolist(), part["value"].tolist())), step=int(step))

    def close(self, status: str | None = None, **fields: Any) -> None:
        """Nothing to release: the run belongs to its owner, who calls ``finish()``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(run={getattr(self._run, 'id', None)!r})"
