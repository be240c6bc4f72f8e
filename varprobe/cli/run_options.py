"""The options of ``varprobe run`` and ``grid``: one per :class:`~varprobe.experiment.RunConfig`
field, generated from the field's name, type and metadata (help text, range check: see
``varprobe.experiment.options``), so the command line and RunConfig cannot drift.

``--batch-size`` sets ``batch_size``; its value is parsed by the field's type (int, float, str, a
comma-separated list of ints, or an on/off flag for a bool) and checked at once by the field's own
check, so a bad value is one line naming the option, the text and what is valid. Options left out
keep the RunConfig default.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from ..experiment.config import RunConfig
from ..experiment.options import Spec, spec_of
from .arguments import integer, list_of, real, text

__all__ = ["Option", "RUN_OPTIONS", "GRID_AXES", "config_from_args", "field_parser", "words"]

_DEFAULTS = RunConfig()
_PARSERS: dict[type, Callable[[str], Any]] = {int: integer, float: real, str: text}

#: The RunConfig fields that ``grid`` sweeps, and the plural option of each.
GRID_AXES = {"scheme": "schemes", "lr": "lrs", "batch_size": "batch_sizes", "seed": "seeds"}


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(int | float | str | bool, is a tuple of them) of a field's annotation, None left out."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True
    return annotation, False


def field_parser(name: str, example: str = "") -> Callable[[str], Any]:
    """The parser of one value of RunConfig field ``name``: its type's parser, then its check (the
    error: ``'<text>': <the check's message>``, unless that already quotes the text). A tuple
    field takes a comma-separated list like ``example``."""
    f = _FIELDS[name]
    base, many = _base_type(_HINTS[name])
    item = _PARSERS[base]
    parse = list_of(item, example) if many else item
    check = spec_of(f).check

    def parse_and_check(raw: str) -> Any:
        value = parse(raw)
        if check is not None:
            try:
                check(name, value)
            except ValueError as exc:
                message = str(exc)
                quoted = repr(raw.strip()) in message
                raise argparse.ArgumentTypeError(message if quoted else f"{raw!r}: {message}") from None
        return value
    parse_and_check.__name__ = name
    return parse_and_check


def words(value: Any) -> str:
    """A default in words, ``%`` escaped for argparse."""
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return (f"{value:g}" if isinstance(value, float) else str(value)).replace("%", "%%")


@dataclass(frozen=True)
class Option:
    """One RunConfig field as a command-line option (``--field-name``, dest ``field``)."""

    field: str
    spec: Spec
    is_flag: bool

    @property
    def help(self) -> str:
        return self.spec.help

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        if self.is_flag:
            parser.add_argument(self.flag, dest=self.field, action="store_true", help=f"{self.help} (default: off)")
            return
        default = self.spec.default_text or words(getattr(_DEFAULTS, self.field))
        example = self.help.rsplit("e.g. ", 1)[-1] if "e.g. " in self.help else "1,2,3"
        parser.add_argument(self.flag, dest=self.field, type=field_parser(self.field, example), default=None,
                            metavar=self.spec.metavar, help=f"{self.help} (default: {default})")


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_HINTS = typing.get_type_hints(RunConfig)
RUN_OPTIONS: tuple[Option, ...] = tuple(
    Option(f.name, spec_of(f), _base_type(_HINTS[f.name])[0] is bool) for f in dataclasses.fields(RunConfig))


def config_from_args(args: argparse.Namespace, **fixed: Any) -> RunConfig:
    """The RunConfig of parsed ``args`` (options not given keep RunConfig's defaults), with ``fixed``
    fields on top. Raises ValueError (from RunConfig) naming a bad value."""
    given = {o.field: getattr(args, o.field) for o in RUN_OPTIONS if hasattr(args, o.field)}
    return RunConfig(**{k: v for k, v in given.items() if v is not None and v is not False}, **fixed)
