"""Child processes that die with their parent (private; used by the pipeline and tuning).

Every child is a spawned :mod:`multiprocessing` process that the parent supervises itself
(no pool: a pool turns one dead child into ``BrokenProcessPool`` for all of them). A child

* ignores SIGINT: Ctrl-C reaches the whole process group, and only the parent decides what an
  interrupt means (it stops the children; they print no ``KeyboardInterrupt`` traceback);
* dies with its parent, whatever ends the parent, SIGKILL included: on Linux the kernel sends
  it SIGKILL when the parent goes (``prctl(PR_SET_PDEATHSIG)``), and everywhere a daemon thread
  waits on the parent's sentinel pipe, which the OS closes when the parent exits, and then
  ends the child at once;
* sends back one message, its result or its error, through a pipe whose end of file tells the
  parent that the child died without answering (killed, out of memory).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from . import _interrupts
from .errors import FashionLabError

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_GRACE_S = 5.0  # after SIGTERM, seconds a child gets before SIGKILL
WAKE_S = 0.5  # the longest the main thread sleeps in a wait before it looks at signals


class ChildDied(FashionLabError):
    """A child process ended without sending its result (killed by a signal, out of memory)."""

    def __init__(self, name: str, pid: int | None, exitcode: int | None) -> None:
        self.name, self.pid, self.exitcode = name, pid, exitcode
        super().__init__(f"{name} (pid {pid}) died: {describe_exit(exitcode)}")


def describe_exit(exitcode: int | None) -> str:
    """``killed by SIGKILL`` or ``exit status 3``, from a :class:`multiprocessing.Process`."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory, or killed by hand)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {exitcode}"


@dataclass(eq=False)
class Child:
    """A started child: its process and the read end of its result pipe."""

    name: str
    process: multiprocessing.process.BaseProcess
    connection: Connection

    @property
    def pid(self) -> int | None:
        return self.process.pid


@dataclass
class Outcome:
    """What a child answered: ``value``, or ``error`` (its exception, or :class:`ChildDied`)."""

    value: Any = None
    error: BaseException | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def start(
    target: Callable[..., Any], args: Sequence[Any], name: str, *, daemon: bool = False
) -> Child:
    """Start ``target(*args)`` in a spawned child that dies with this process.

    ``daemon=True`` for children that start no children of their own.
    """
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main, args=(writer, target, tuple(args)), name=name, daemon=daemon
    )
    # A child inherits an ignored SIGINT across exec: a Ctrl-C while it imports its modules
    # (seconds, for torch) must not print a traceback there either.
    previous = _set_sigint(signal.SIG_IGN)
    try:
        process.start()
    finally:
        _set_sigint(previous)
        writer.close()  # the child holds the only write end: its death is an end of file here
    return Child(name, process, reader)


def wait_any(
    children: Sequence[Child], timeout: float | None = None
) -> list[tuple[Child, Outcome]]:
    """Block until at least one child has answered or died (or ``timeout``); reap those."""
    by_connection = {child.connection: child for child in children}
    ended = []
    # In slices of a second: a signal that the kernel hands to another thread of this process
    # only sets a flag, which the main thread reads when it runs Python again; blocked in one
    # long wait it would never see a SIGTERM or a Ctrl-C.
    deadline = None if timeout is None else time.monotonic() + timeout
    ready: list[Any] = []
    while not ready:
        _interrupts.check()
        left = WAKE_S if deadline is None else min(WAKE_S, deadline - time.monotonic())
        if left <= 0:
            break
        ready = wait(list(by_connection), left)
    for connection in ready:
        child = by_connection[connection]
        try:
            kind, payload = connection.recv()
        except (EOFError, OSError):
            child.process.join()
            outcome = Outcome(error=ChildDied(child.name, child.pid, child.process.exitcode))
        else:
            child.process.join()
            outcome = Outcome(value=payload) if kind == "ok" else Outcome(error=payload)
        connection.close()
        ended.append((child, outcome))
    return ended


def stop(children: Sequence[Child], grace_s: float = STOP_GRACE_S) -> None:
    """End children that still run: SIGTERM, then SIGKILL after ``grace_s``; reap them all."""
    alive = [child for child in children if child.process.is_alive()]
    for child in alive:
        child.process.terminate()
    for child in alive:
        child.process.join(grace_s)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
    for child in children:
        if not child.connection.closed:
            child.connection.close()


def _set_sigint(handler: Any) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread may set handlers; a child then starts as today
    if handler is None:
        return None
    return signal.signal(signal.SIGINT, handler)


# --------------------------------------------------------------------------- in the child


def _child_main(writer: Connection, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    die_with_parent()
    # tqdm guards its bars with a multiprocessing lock: a named semaphore that a child stopped
    # by SIGTERM leaves to the resource tracker, which then warns on stderr. One process's
    # bars need only a thread lock.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    try:
        message: tuple[str, Any] = ("ok", target(*args))
    except BaseException as exc:  # noqa: BLE001 - every error goes back to the parent
        message = ("error", _portable(exc))
    try:
        writer.send(message)
    except Exception as exc:  # an unpicklable result: say so instead of dying silently
        writer.send(
            (
                "error",
                FashionLabError(
                    f"{multiprocessing.current_process().name} could not send its result: {exc}"
                ),
            )
        )
    finally:
        writer.close()


def die_with_parent() -> None:
    """In a spawned child: ignore SIGINT and end this process as soon as the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if sys.platform.startswith("linux"):
        # The kernel sends the signal when the parent *thread* that started this child ends;
        # children are started, waited for and stopped by one thread, so that is the parent.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent is None or parent.sentinel is None:
        return
    threading.Thread(
        target=_exit_when_parent_ends, args=(parent.sentinel,), daemon=True, name="parent-watch"
    ).start()


def _exit_when_parent_ends(sentinel: int) -> None:
    # The sentinel is the read end of a pipe whose write end only the parent holds: it becomes
    # readable (end of file) when the parent exits, however it exits. Also true if it already has.
    wait([sentinel])
    os._exit(1)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles (with the child's traceback as a note), else a plain error."""
    if not isinstance(exc, FashionLabError):
        text = "".join(traceback.format_exception(exc)).rstrip()
        exc.add_note(f"in {multiprocessing.current_process().name}:\n{text}")
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return FashionLabError(f"{type(exc).__name__}: {exc}")
