"""Ctrl-C and SIGTERM end the command, even when they arrive inside a finaliser.

Python raises a signal's exception in whatever the main thread runs at that moment. When that is a
finaliser (a ``__del__`` method, a weakref callback, a garbage-collector callback; SQLAlchemy's
event registry has one that runs often while a tuning study commits), the interpreter cannot
propagate it: it prints ``Exception ignored in ... KeyboardInterrupt`` and drops it, and the
command runs on as if no key had been pressed.

So inside :func:`handling` the signal is also *recorded*: an interrupt a finaliser swallowed is
not printed (``sys.unraisablehook``), and :func:`check`, called at the step boundaries of the long
loops (every SGD step, every tuning trial, every wait for a child process, every stage), raises
it again there. Sending the signal again from the hook does not work: its handler would run at
once, inside the hook, where the exception is swallowed once more.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["Interrupted", "handling", "check", "deferred", "signal_number"]

_pending: int | None = None  # the signal that arrived, until the command has handled it
_deferring = 0  # inside deferred(): a signal is recorded, and raised by the next check()


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM inside :func:`handling`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_number(exc: KeyboardInterrupt) -> int:
    """The signal behind ``exc``: SIGINT for a KeyboardInterrupt raised outside :func:`handling`."""
    return getattr(exc, "signum", signal.SIGINT)


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived (cheap: call it at every step boundary)."""
    if _pending is not None:
        raise Interrupted(_pending)


def _record_and_raise(signum: int, frame: object) -> None:
    global _pending
    _pending = signum
    if not _deferring:
        raise Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside, SIGTERM and Ctrl-C (under :func:`handling`) are only recorded; the caller's next
    :func:`check` raises them. For a few statements that must not be cut in two, such as
    creating a tuning trial and getting hold of it (cut there, nobody could fail it)."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """While inside, SIGTERM and Ctrl-C raise :class:`Interrupted` and are never lost.

    Ctrl-C is handled only where Python handles it (a command started with SIGINT ignored, say
    in the background, keeps ignoring it). Only the main thread may set handlers; elsewhere this
    does nothing.
    """
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _record_and_raise)
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, _record_and_raise)
    previous_hook = sys.unraisablehook

    def quiet_when_recorded(unraisable) -> None:
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _pending is not None):
            previous_hook(unraisable)

    sys.unraisablehook = quiet_when_recorded
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        _pending = None
