"""The program name, exit codes and the debug switch of the ``varprobe`` command line (see
``varprobe.cli.main`` for what each exit code means)."""
from __future__ import annotations

__all__ = ["PROG", "EXIT_OK", "EXIT_MISSING", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_ERROR", "EXIT_FAILED",
           "DEBUG_ENV", "missing"]

PROG = "varprobe"
EXIT_OK, EXIT_MISSING, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_ERROR = 1
EXIT_FAILED = EXIT_ERROR  # a grid with a run that failed
DEBUG_ENV = "VARPROBE_DEBUG"


def missing(exc: ImportError, module: str, name: str, command: str) -> int:
    """For ``from <module> import <name>`` that failed with ``exc``: where ``module`` itself (or
    ``name`` in it) is not there, one line "… is not available in this installation" on stderr and
    EXIT_MISSING; any other import error (a dependency of that module) is re-raised."""
    import sys

    if exc.name != module:
        raise exc
    print(f"{PROG} {command}: error: {module}.{name} is not available in this installation", file=sys.stderr)
    return EXIT_MISSING
