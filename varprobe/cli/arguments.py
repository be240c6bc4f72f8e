"""Parsers of command-line values: each error names the bad text and what is valid.

Each returns the parsed value or raises ``argparse.ArgumentTypeError``, which argparse turns into
one line ``argument --flag: <message>`` and exit 2.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable

from ..vocabulary import FIGURE_EXTENSIONS

__all__ = ["integer", "real", "text", "bounded", "positive_int", "list_of", "figure_path", "backend"]


def integer(text: str) -> int:
    """An int."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def real(text: str) -> float:
    """A finite float ("inf" and "nan" are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def text(value: str) -> str:
    """The text, stripped."""
    return value.strip()


def bounded(parse: Callable[[str], Any], ok: Callable[[Any], bool], valid_text: str,
            name: str) -> Callable[[str], Any]:
    """``parse``, then reject a value that fails ``ok`` with "{text!r} {valid_text}"."""
    def check(raw: str) -> Any:
        value = parse(raw)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{raw!r} {valid_text}")
        return value
    check.__name__ = name  # argparse and list_of name the type by it
    return check


positive_int = bounded(integer, lambda v: v >= 1, "is not a positive integer (valid: 1, 2, ...)", "positive_int")


def list_of(item: Callable[[str], Any], example: str) -> Callable[[str], tuple]:
    """A comma-separated list of ``item`` values ("" is the empty list)."""
    def parse(raw: str) -> tuple:
        if not raw.strip():
            return ()
        out = []
        for part in raw.split(","):
            try:
                if not part.strip():
                    raise argparse.ArgumentTypeError("empty item")
                out.append(item(part.strip()))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(
                    f"bad item in list {raw!r}: {exc}; expected a comma-separated list like {example}") from None
        return tuple(out)
    parse.__name__ = f"list of {getattr(item, '__name__', 'values').lstrip('_')}"
    return parse


def figure_path(raw: str) -> Path:
    """A path whose extension is one of ``FIGURE_EXTENSIONS`` (any case)."""
    suffix = Path(raw).suffix.lower()
    if suffix not in FIGURE_EXTENSIONS:
        raise argparse.ArgumentTypeError(
            f"unsupported figure extension {suffix or '(none)'!r} in {raw!r}; valid: {', '.join(FIGURE_EXTENSIONS)}")
    return Path(raw)


def backend(raw: str) -> str:
    """One of ``varprobe.experiment.grid.BACKENDS``."""
    from ..experiment.grid import BACKENDS
    if raw not in BACKENDS:
        raise argparse.ArgumentTypeError(f"unknown backend {raw!r}; valid: {', '.join(BACKENDS)}")
    return raw
