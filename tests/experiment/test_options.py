"""The field metadata behind RunConfig's checks and the command line's options."""
from __future__ import annotations

import dataclasses
import math

import pytest

from varprobe.experiment import RunConfig
from varprobe.experiment.options import (check_fields, choice, flag, integer_in, non_negative_ints, number, one_of,
                                         option, positive_int, spec_of)


def test_every_runconfig_field_has_help_and_a_check():
    for f in dataclasses.fields(RunConfig):
        spec = spec_of(f)
        assert len(spec.help.split()) >= 2, f.name
        assert spec.check is not None, f.name
        spec.check(f.name, getattr(RunConfig(), f.name))  # every default passes its own check


@pytest.mark.parametrize("check, good, bad, message", [
    (choice(("a", "b")), "a", "c", "unknown x 'c'; valid: a, b"),
    (flag, True, 1, "x must be True or False, got 1"),
    (positive_int(), 3, True, "x must be a positive integer, got True"),
    (positive_int(optional=True), None, 0, "x must be a positive integer or None, got 0"),
    (integer_in(0, 4, "an integer from 0 to 3"), 3, 4, "x must be an integer from 0 to 3, got 4"),
    (number((lambda v: v > 0, "> 0"), (lambda v: v < 2, "< 2")), 1.0, math.nan, "x must be > 0, got nan"),
    (number((lambda v: v > 0, "> 0"), (lambda v: v < 2, "< 2")), 1.0, 2.0, "x must be < 2, got 2.0"),
    (number((lambda v: v >= 0, ">= 0"), optional=True), None, -1.0, "x must be >= 0, got -1.0"),
    (non_negative_ints, (0, 5), (1, -1), "x must be a sequence of non-negative integers, got (1, -1)"),
    (one_of((1, 3, None), "1, 3 or None"), 3, 3.0, "x must be 1, 3 or None, got 3.0"),
])
def test_checks_pass_good_values_and_name_bad_ones(check, good, bad, message):
    check("x", good)
    with pytest.raises(ValueError) as info:
        check("x", bad)
    assert str(info.value) == message


def test_a_field_without_metadata_is_named():
    @dataclasses.dataclass
    class Config:
        a: int = dataclasses.field(default=1, metadata=option("the a of it", "A", positive_int()))
        b: int = 2

    with pytest.raises(KeyError, match="'b' has no option"):
        check_fields(Config())
    with pytest.raises(ValueError, match="a must be a positive integer, got 0"):
        check_fields(Config(a=0))
