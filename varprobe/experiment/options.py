"""What each field of a config is: its help text and its one range check, as dataclass metadata.

A field declared as ``lr: float = field(default=0.05, metadata=option("SGD learning rate", "LR",
positive(at_most=FLOAT32_MAX)))`` carries a :class:`Spec`. ``RunConfig.__post_init__`` runs every
field's check (:func:`check_fields`), and the command line builds one option per field from the
same Spec (``varprobe.cli.run_options``), checking each value with the same function while it
parses, so the two can never drift. Cross-field rules (an image size a data set allows, gamma only
for PWS) stay in ``__post_init__``.

A check is a function ``(name, value) -> None`` that raises ``ValueError("{name} must be {valid},
got {value!r}")`` (or for a choice ``"unknown {name} {value!r}; valid: a, b, c"``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Spec", "Check", "option", "spec_of", "check_fields", "choice", "flag", "positive_int", "integer_in",
           "number", "non_negative_ints", "one_of"]

Check = Callable[[str, Any], None]
_KEY = "varprobe"


@dataclass(frozen=True)
class Spec:
    """One config field as the user sees it.

    Attributes:
        help: what the field means, with its unit and the valid values in words.
        metavar: the placeholder of its value on the command line ("" for an on/off flag).
        check: its range check (None: any value of its type).
        default_text: the default in words, where the field's default value needs explaining.
    """

    help: str
    metavar: str = ""
    check: Check | None = None
    default_text: str | None = None


def option(help: str, metavar: str = "", check: Check | None = None, default_text: str | None = None
           ) -> dict[str, Spec]:
    """The ``metadata`` of a config field: ``field(default=..., metadata=option(...))``."""
    return {_KEY: Spec(help, metavar, check, default_text)}


def spec_of(f: dataclasses.Field) -> Spec:
    """The :class:`Spec` of a dataclass field (KeyError naming it if it has none)."""
    try:
        return f.metadata[_KEY]
    except KeyError:
        raise KeyError(f"config field {f.name!r} has no option(...) metadata") from None


def check_fields(config: Any) -> None:
    """Run every field's check on ``config`` (a dataclass instance), in field order."""
    for f in dataclasses.fields(config):
        spec = spec_of(f)
        if spec.check is not None:
            spec.check(f.name, getattr(config, f.name))


def _fail(name: str, valid: str, value: Any) -> None:
    raise ValueError(f"{name} must be {valid}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choice(valid: tuple[str, ...]) -> Check:
    """One of ``valid``: "unknown {name} {value!r}; valid: ..."."""
    def check(name: str, value: Any) -> None:
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")
    return check


def flag(name: str, value: Any) -> None:
    """True or False (not 1, not None)."""
    if not isinstance(value, bool):
        _fail(name, "True or False", value)


def positive_int(optional: bool = False) -> Check:
    """An int >= 1 (never a bool), or also None with ``optional``."""
    valid = "a positive integer" + (" or None" if optional else "")

    def check(name: str, value: Any) -> None:
        if not ((optional and value is None) or (_is_int(value) and value >= 1)):
            _fail(name, valid, value)
    return check


def integer_in(low: int, high: int, valid: str, optional: bool = False) -> Check:
    """An int with low <= value < high; ``valid`` says so in words. None passes with ``optional``."""
    def check(name: str, value: Any) -> None:
        if optional and value is None:
            return
        if not (_is_int(value) and low <= value < high):
            _fail(name, valid, value)
    return check


def number(*rules: tuple[Callable[[float], bool], str], optional: bool = False) -> Check:
    """A number passing every ``(ok, valid)`` rule in turn; the first that fails names its ``valid``
    ("> 0", "at most 3.4e38 (...)"). NaN fails every comparison. None passes with ``optional``."""
    def check(name: str, value: Any) -> None:
        if optional and value is None:
            return
        for ok, valid in rules:
            if not ok(value):
                _fail(name, valid, value)
    return check


def non_negative_ints(name: str, value: Any) -> None:
    """A sequence of distinct ints >= 0 (a list of steps: a step given twice would compound a
    milestone's decay, or probe one step twice)."""
    if isinstance(value, (str, bytes)) or not all(_is_int(v) and v >= 0 for v in _items(value)):
        _fail(name, "a sequence of non-negative integers", value)
    items = _items(value)
    if len(set(items)) != len(items):
        _fail(name, "a sequence of distinct non-negative integers (a step given once)", value)


def _items(value: Any) -> list:
    try:
        return list(value)
    except TypeError:
        return [None]


def one_of(valid: tuple[Any, ...], text: str) -> Check:
    """A value in ``valid`` compared by value and type (``1.0`` and ``True`` are not ``1``);
    ``text`` lists them in words."""
    def check(name: str, value: Any) -> None:
        if not any(type(value) is type(v) and value == v for v in valid):
            _fail(name, text, value)
    return check
