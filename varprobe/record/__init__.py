"""Run storage: a run directory of ``meta.json`` plus append-only Parquet chunks.

This layer knows nothing of models or probes: it stores long-format pandas frames (columns
``step, layer, depth, mode, module_type, role, quantity, value``) and JSON metadata.

* :class:`~varprobe.record.writer.RunWriter` writes a run (atomic chunks and meta, single-writer lock).
* :func:`~varprobe.record.reader.load_run` reads one run into a :class:`~varprobe.record.reader.Run`;
  :func:`~varprobe.record.reader.load_runs` concatenates runs
  with ``run``, ``status`` and config columns; :func:`~varprobe.record.reader.check_run` lists what is wrong with a
  run (``[]`` if intact), as ``Run.problems``/``Run.damaged`` do for a loaded one.

Guarantees: every chunk whose ``append`` returned survives a kill of the writing process;
readers never see a partial chunk or a partial ``meta.json``, nor a mix of two runs while one
replaces the other; a second writer on the same directory is refused; a killed writer's lock
never blocks a rerun. ``overwrite=True`` replaces only a valid varprobe run and deletes only
the files the run format owns (:mod:`.layout`); anything else is refused. A malformed
``meta.json`` raises :class:`RunFormatError` naming the file and field; a failed write (disk
full) raises one :class:`RunWriteError`, keeps the chunks already written and marks the run
failed where meta.json can still be written.
"""

from .._lazy import lazy_names
from .lock import RunLockedError
from .errors import RunFormatError, RunWriteError

__all__ = ["RunWriter", "Run", "load_run", "load_runs", "check_run", "RunLockedError",
           "RunFormatError", "RunWriteError"]

#: The names that need pandas and pyarrow, loaded on first use (PEP 562): the errors above do not,
#: and the command line builds its parser with them alone.
_LAZY = {"Run": "reader", "check_run": "reader", "load_run": "reader", "load_runs": "reader", "RunWriter": "writer"}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
