"""Run storage: a run directory of ``meta.json`` plus append-only Parquet chunks.

This layer knows nothing of models or probes: it stores long-format pandas frames (columns
``step, layer, depth, mode, module_type, quantity, value``) and JSON metadata.

* :class:`RunWriter` writes a run (atomic chunks and meta, single-writer lock).
* :func:`load_run` reads one run into a :class:`Run`; :func:`load_runs` concatenates runs
  with ``run``, ``status`` and config columns.

Guarantees: every chunk whose ``append`` returned survives a kill of the writing process;
readers never see a partial chunk or a partial ``meta.json``; a second writer on the same
directory is refused; a killed writer's lock never blocks a rerun.
"""

from .lock import RunLockedError
from .errors import RunFormatError, RunWriteError
from .reader import Run, check_run, load_run, load_runs
from .writer import RunWriter

__all__ = ["RunWriter", "Run", "load_run", "load_runs", "check_run", "RunLockedError",
           "RunFormatError", "RunWriteError"]
