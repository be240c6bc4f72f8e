"""Which training steps a Probe records: every k steps, log-spaced, or any step -> bool callable."""
from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["Schedule", "Every", "LogSchedule", "log_schedule", "as_schedule"]

Schedule = Callable[[int], bool]


class Every:
    """Record steps 0, k, 2k, ..."""

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"every must be a positive int or a callable step -> bool, got {k!r}")
        self.k = k

    def __call__(self, step: int) -> bool:
        return step % self.k == 0

    def __repr__(self) -> str:
        return f"Every({self.k})"


class LogSchedule:
    """Record step 0 and the steps round(10 ** (j / per_decade)), j = 0, 1, 2, ...

    ``per_decade=10`` records 0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 79, 100,
    126, ...: dense early in training, where statistics move fastest, about per_decade steps per
    factor of 10 later (Cockpit's ``logarithmic`` schedule does the same).
    """

    def __init__(self, per_decade: int = 10) -> None:
        if isinstance(per_decade, bool) or not isinstance(per_decade, int) or per_decade <= 0:
            raise ValueError(f"per_decade must be a positive int, got {per_decade!r}")
        self.per_decade = per_decade

    def _at(self, j: int) -> int:
        return round(10 ** (j / self.per_decade))

    def __call__(self, step: int) -> bool:
        if step <= 1:
            return step >= 0
        j = math.floor(self.per_decade * math.log10(step))
        return any(self._at(i) == step for i in (j - 1, j, j + 1))

    def steps(self, stop: int) -> list[int]:
        """The recorded steps below ``stop``."""
        return [s for s in range(stop) if self(s)]

    def __repr__(self) -> str:
        return f"LogSchedule(per_decade={self.per_decade})"


def log_schedule(per_decade: int = 10) -> LogSchedule:
    """A log-spaced schedule: step 0, then about ``per_decade`` steps per decade (see LogSchedule)."""
    return LogSchedule(per_decade)


def as_schedule(every: int | Schedule) -> Schedule:
    """``every`` as a step -> bool callable: a positive int k means every k-th step from step 0.

    Raises ValueError for a non-positive or non-integer ``every`` that is not callable.
    """
    if callable(every):
        return every
    return Every(every)
