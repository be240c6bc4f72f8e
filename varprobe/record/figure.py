"""Saving a figure through the one write path (:mod:`varprobe.record.files`): the format follows the
file's extension, and the file is created or replaced only where varprobe may write it."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ..vocabulary import FIGURE_EXTENSIONS
from .files import OutputDir

__all__ = ["FORMATS", "PNG_DPI", "figure_format", "figure_bytes", "save_figure"]

FORMATS = tuple(e.lstrip(".") for e in FIGURE_EXTENSIONS)
PNG_DPI = 150


def figure_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path``'s extension (``png``, ``svg``, ``pdf``); ValueError naming it and the
    valid ones otherwise."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"unknown figure format {ext or '(no extension)'!r} of {str(path)!r}; "
                         f"valid: {', '.join('.' + f for f in FORMATS)}")
    return ext


def figure_bytes(fig: Any, fmt: str) -> bytes:
    """A matplotlib figure rendered as ``fmt`` (png at :data:`PNG_DPI`, svg, pdf), the bounding box
    grown to include legends outside the panels; no timestamp or software tag in a png."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=PNG_DPI if fmt == "png" else "figure", bbox_inches="tight",
                metadata={"Software": None} if fmt == "png" else None)
    return buffer.getvalue()


def save_figure(fig: Any, path: str | os.PathLike[str], out: OutputDir | None = None) -> Path:
    """Write ``fig`` to ``path`` in the format of its extension, through ``out`` (``path`` relative
    to it) or else the :class:`~varprobe.record.files.OutputDir` of ``path``'s folder (kind
    ``"plot"``, created when missing). Raises :class:`~varprobe.record.files.WriteRefused` rather
    than replace a file varprobe did not write."""
    fmt = figure_format(path)
    if out is None:
        path = Path(path)
        out = OutputDir(path.parent, "plot")
        return out.write(path.name, figure_bytes(fig, fmt))
    return out.write(Path(path).as_posix(), figure_bytes(fig, fmt))
