"""How every subcommand's parser is made: its usage line, wrapped description with an example,
the ``--debug`` switch, and ``func`` / ``parser`` defaults that ``main`` dispatches on."""
from __future__ import annotations

import argparse
import textwrap
from typing import Any, Callable

from .exits import DEBUG_ENV

__all__ = ["Formatter", "subparser", "add_debug"]


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _paragraphs(text: str, example: str | None = None) -> str:
    """A description: ``text`` wrapped, then ``example`` as is (the formatter keeps it unwrapped)."""
    out = textwrap.fill(text, width=88)
    return f"{out}\n\nexample:\n  {example}" if example else out


def subparser(sub: Any, name: str, usage: str, help: str, description: str, func: Callable[..., int],
              example: str | None = None) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``; parsed arguments carry ``func`` and ``parser``."""
    p = sub.add_parser(name, help=help, description=_paragraphs(description, example),
                       usage=f"%(prog)s {usage}", formatter_class=Formatter)
    p.set_defaults(func=func, parser=p)
    add_debug(p, default=argparse.SUPPRESS)  # given after the command, or before it: both count
    return p


def add_debug(parser: argparse.ArgumentParser, default: Any) -> None:
    """The ``--debug`` switch: tracebacks instead of one line."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help=f"on an internal error show the full traceback, not one line (default: off; "
                             f"{DEBUG_ENV}=1 does the same)")
