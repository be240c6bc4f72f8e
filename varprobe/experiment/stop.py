"""Stop signals: SIGTERM and SIGHUP handled like Ctrl-C, and never in the middle of a write.

Slurm, Kubernetes and ``timeout`` stop a process with SIGTERM (a closed terminal sends SIGHUP);
Python's default for both is to die at once, losing the steps buffered since the last flush and
leaving the run marked "running". Inside :func:`stop_signals` (the ``varprobe`` command line uses
it) SIGINT raises ``KeyboardInterrupt`` and SIGTERM or SIGHUP raise :class:`Terminated`, so that
``run()`` flushes, marks the run failed naming the signal and releases the lock.

Two rules keep that shutdown clean:

* Inside :func:`deferred` (a probe step, a flush, a ``meta.json`` write) a stop signal is held
  and raised when the block ends, so a stop never lands between a buffered step and its write.
* After the first stop signal every further SIGINT, SIGTERM or SIGHUP is ignored: a second
  Ctrl-C during the shutdown cannot interrupt the flush or print "Exception ignored" tracebacks.

Outside :func:`stop_signals` (plain library use) :func:`deferred` changes nothing.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator

__all__ = ["Terminated", "STOP_SIGNALS", "stop_signals", "deferred", "error_of"]

#: The signals that stop a run cleanly (the ones that exist on this platform).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(BaseException):
    """The process received SIGTERM or SIGHUP (raised like ``KeyboardInterrupt`` for SIGINT).

    A ``BaseException``, so that ``except Exception`` in user code does not swallow it.
    ``name`` is the signal's name ("SIGTERM"), ``exit_code`` the shell's convention 128 + signum
    (143 for SIGTERM, 129 for SIGHUP).
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + self.signum
        super().__init__(f"stopped by {self.name} (signal {self.signum})")


class _State:
    """What the installed handler knows: whether it is active, the depth of :func:`deferred`
    blocks, the stop held for the end of the outermost one, and whether a stop was received."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.active = False
        self.depth = 0
        self.held: BaseException | None = None
        self.received: int | None = None


_state = _State()


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.received is not None:  # shutting down already: ignore
        return
    _state.received = signum
    if _state.depth:
        _state.held = _exception(signum)
        return
    raise _exception(signum)


@contextlib.contextmanager
def stop_signals(*, restore: bool = True) -> Iterator[None]:
    """Within the block, SIGINT raises ``KeyboardInterrupt`` and SIGTERM/SIGHUP raise
    :class:`Terminated` (outside :func:`deferred` blocks; inside, at their end); every stop
    signal after the first is ignored.

    On leaving, the previous handlers come back, except after a stop signal when ``restore`` is
    False: then the stop signals stay ignored, for a program about to exit (a second Ctrl-C while
    the interpreter shuts down would otherwise print a traceback). Only the main thread can
    install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _state.active:
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _state.reset()
    _state.active = True
    for s in STOP_SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        received = _state.received is not None
        _state.reset()
        for s, old in previous.items():
            signal.signal(s, signal.SIG_IGN if received and not restore else old)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a stop signal received inside the block and raise it when the outermost block ends
    normally (if the block raised, its own exception goes on and the stop is dropped: the run
    stops either way). Does nothing outside :func:`stop_signals`."""
    _state.depth += 1
    try:
        yield
    except BaseException:
        _state.depth -= 1
        if _state.depth == 0:
            _state.held = None
        raise
    _state.depth -= 1
    if _state.depth == 0 and _state.held is not None:
        held, _state.held = _state.held, None
        raise held


def error_of(exc: BaseException) -> dict[str, str]:
    """The ``error`` entry of a failed run's ``meta.json``: ``type`` (the exception's class, or
    the signal's name for :class:`Terminated`, e.g. "SIGTERM") and ``message``."""
    if isinstance(exc, Terminated):
        return {"type": exc.name, "message": str(exc)}
    return {"type": type(exc).__name__, "message": str(exc)[:2000]}
