"""Helpers for tests that start, freeze, signal and kill processes (imported by test modules).

Nothing here waits for a fixed time: every wait polls for a state (a row in the study
database, a process gone) and its deadline only guards against a hang.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

HANG_S = 300  # a wait that lasts this long is a hang, not a slow machine


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    """Rows of ``sql`` on the SQLite file ``db``; [] while it or its tables do not exist."""
    if not db.is_file():
        return []
    try:
        with closing(sqlite3.connect(db, timeout=30)) as connection:
            return connection.execute(sql, params).fetchall()
    except sqlite3.Error:
        return []


def trial_states(db: Path) -> dict[int, str]:
    return dict(query(db, "SELECT number, state FROM trials ORDER BY number"))


def finished(db: Path) -> int:
    return sum(state in ("COMPLETE", "PRUNED") for state in trial_states(db).values())


def running_owners(db: Path) -> dict[int, int | None]:
    """RUNNING trial number -> the pid of the process that named itself its owner (or None)."""
    rows = query(
        db,
        "SELECT t.number, a.value_json FROM trials t "
        "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "AND a.key = 'worker' WHERE t.state = 'RUNNING'",
    )
    return {
        number: int(value.strip('"').rsplit(":", 1)[1]) if value else None for number, value in rows
    }


def retried(db: Path, number: int) -> int:
    """How many trials were queued again as retries of trial ``number``."""
    rows = query(db, "SELECT value_json FROM trial_system_attributes WHERE key = 'failed_trial'")
    return sum(int(value) == number for (value,) in rows)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def wait_for(
    condition: Callable[[], object], what: str, process: subprocess.Popen | None = None
) -> object:
    """Poll ``condition`` until it is truthy; fail if ``process`` ends first or on a hang."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"no {what} after {HANG_S} s")


def freeze_when(pgid: int, ready: Callable[[], object], process: subprocess.Popen) -> object:
    """Stop process group ``pgid`` (SIGSTOP) at a moment when ``ready()`` holds; return its value.

    While the group is stopped nothing changes in its files, so what the test reads then is
    what the group will find when it is signalled or resumed.
    """
    while True:
        wait_for(ready, "the awaited state", process)
        os.killpg(pgid, signal.SIGSTOP)
        value = ready()
        if value:
            return value
        os.killpg(pgid, signal.SIGCONT)


def _as_from_a_terminal() -> None:
    """In the child before exec: SIGINT at its default, as for a command started at a prompt.

    A shell starts background commands with SIGINT ignored, and Python then installs no Ctrl-C
    handler: a test that presses Ctrl-C must not depend on how the suite itself was started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def started(command: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """``command`` in its own session; its whole group is killed on the way out."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        text=True,
        preexec_fn=_as_from_a_terminal,
        **kwargs,
    )
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
