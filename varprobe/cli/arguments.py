"""Parsers of command-line values: each error names the bad text and what is valid.

Each returns the parsed value or raises ``argparse.ArgumentTypeError``, which argparse turns into
one line ``argument --flag: <message>`` and exit 2.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, Callable

from ..vocabulary import FIGURE_EXTENSIONS

__all__ = ["integer", "real", "text", "bounded", "positive_int", "up_to", "jobs", "list_of", "path", "figure_path",
           "backend"]


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


def up_to(maximum: int, name: str) -> Callable[[str], int]:
    """A positive int of at most ``maximum`` (a count that is refused above it, before it reaches a
    C int or a list of that length)."""
    return bounded(integer, lambda v: 1 <= v <= maximum,
                   f"is not a positive integer up to {maximum} (valid: 1 to {maximum})", name)


#: The most worker processes at once (--jobs of grid and reproduce), each a process with its own torch:
#: above a C int the process pool itself fails (OverflowError).
MAX_JOBS = 1024
jobs = up_to(MAX_JOBS, "jobs")


def list_of(item: Callable[[str], Any], example: str, default: str | None = None) -> Callable[[str], tuple]:
    """A comma-separated list of ``item`` values; an empty item (``1,,2``, ``,,``) is refused.
    "" (or blanks) is the empty list where ``default`` is None; otherwise it is refused, naming
    ``default``: what leaving the option out gives."""
    def parse(raw: str) -> tuple:
        if not raw.strip():
            if default is None:
                return ()
            raise argparse.ArgumentTypeError(f"{raw!r} is empty; give at least one value, e.g. {example}, or "
                                             f"leave the option out for {default}")
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


def _shown(raw: str, width: int = 60) -> str:
    return repr(raw if len(raw) <= width else raw[:width] + "...")


def _name_limits(at: Path) -> tuple[int, int]:
    """(longest name, longest path) in bytes on the file system of ``at``'s nearest existing ancestor."""
    for candidate in (at, *at.parents):
        try:
            if candidate.is_dir():
                return os.pathconf(candidate, "PC_NAME_MAX"), os.pathconf(candidate, "PC_PATH_MAX")
        except (OSError, ValueError):
            continue
    return 255, 4096


def path(raw: str) -> str:
    """``raw``, unchanged, where it is a usable file system path: not blank, each name and the
    whole within the lengths the file system allows (no later ``open`` fails with "File name too
    long")."""
    if not raw.strip():
        raise argparse.ArgumentTypeError(f"{raw!r} is not a path; give a file or directory name")
    value = Path(raw)
    name_max, path_max = _name_limits(value)
    longest = max(value.parts, key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > name_max:
        raise argparse.ArgumentTypeError(
            f"{_shown(raw)} holds a name of {len(os.fsencode(longest))} bytes ({_shown(longest, 20)}); "
            f"valid: names of at most {name_max} bytes on this file system")
    if len(os.fsencode(raw)) >= path_max:
        raise argparse.ArgumentTypeError(f"{_shown(raw)} is {len(os.fsencode(raw))} bytes long; valid: paths "
                                         f"shorter than {path_max} bytes on this file system")
    return raw


def figure_path(raw: str) -> Path:
    """A :func:`path` whose extension is one of ``FIGURE_EXTENSIONS`` (any case)."""
    path(raw)
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
