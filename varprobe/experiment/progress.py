"""The progress bar of a run's steps and of a grid's runs: tqdm on stderr."""
from __future__ import annotations

import os
import sys

from tqdm import tqdm

__all__ = ["progress_bar", "FALLBACK_SIZE"]

#: (columns, lines) assumed where stderr is a terminal that reports no size (0 x 0: a
#: pseudo-terminal that was never sized, as under ``script`` or some CI runners), on which tqdm
#: would draw nothing.
FALLBACK_SIZE = (80, 24)


def _sized() -> bool:
    try:
        return min(os.get_terminal_size(sys.stderr.fileno())) > 0
    except (AttributeError, OSError, ValueError):  # not a terminal, or no file descriptor
        return False


def progress_bar(total: int, desc: str, unit: str, *, enabled: bool, initial: int = 0) -> tqdm:
    """A tqdm bar on stderr of ``total`` ``unit`` s, a no-op unless ``enabled``: as wide as the
    terminal (following its resizes), or of :data:`FALLBACK_SIZE` where it reports no size. Shows
    the count, the rate (``unit``/s) and what the caller sets as its postfix."""
    sized = not enabled or _sized()
    ncols, nrows = (None, None) if sized else FALLBACK_SIZE
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, disable=not enabled,
                dynamic_ncols=sized, ncols=ncols, nrows=nrows)
