"""A signal that ends the command is never lost, even when a finaliser swallows its exception.

The signals here are sent by the test process to itself, from the code that is running, so the
moment each one arrives is fixed by the code, not by timing.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from fashionlab import _interrupts


class _SignalInFinaliser:
    """Sends ``signum`` to this process from ``__del__``; the handler then runs inside it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        total = 0
        for i in range(10_000):  # Python code: the pending handler runs here, in the finaliser
            total += i


def test_an_interrupt_inside_a_finaliser_is_raised_at_the_next_check(capfd) -> None:
    with _interrupts.handling():
        _SignalInFinaliser(signal.SIGTERM)  # dropped at once: __del__ runs now
        with pytest.raises(_interrupts.Interrupted) as caught:
            _interrupts.check()
    assert caught.value.signum == signal.SIGTERM
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "Interrupted" not in err, err


def test_without_the_record_python_drops_it(monkeypatch) -> None:
    """What the module exists for: plain Python hands such an interrupt to the unraisable hook
    (which prints it) and runs on."""
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable))

    def raise_it(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_it)
    try:
        _SignalInFinaliser(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [type(u.exc_value) for u in dropped] == [KeyboardInterrupt]


def test_an_interrupt_in_ordinary_code_raises_at_once_and_is_forgotten_on_exit() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with _interrupts.handling():
        with pytest.raises(_interrupts.Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs at the first instruction after kill
                pass
    _interrupts.check()  # handled: nothing pending once the block is left
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_signal_inside_deferred_is_raised_by_the_next_check_not_before() -> None:
    reached = []
    with _interrupts.handling():
        with _interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            total = 0
            for i in range(10_000):  # Python code: the handler has run by the end of the loop
                total += i
            reached.append("after the signal, inside")  # not cut in two
        with pytest.raises(_interrupts.Interrupted) as caught:
            _interrupts.check()
    assert reached == ["after the signal, inside"]
    assert caught.value.signum == signal.SIGTERM
