"""The two test tiers (see conftest.py): which tests the collection puts in the full tier, and
the audit hook that refuses a process, a socket or a file of the real data to a fast-tier test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fashionlab import data

FULL_TIER_FIXTURES = ("real_data_dir", "quick_run", "quick_run_copy")
FULL_TIER_MARKS = ("postgres", "browser")
PROCESS_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "multiprocessing.spawn",  # raised by guard_spawn: the spawn start fires no audit event
    }
)
SOCKET_EVENTS = frozenset({"socket.connect", "socket.bind"})


class FullTierOnly(RuntimeError):
    """A test without the ``slow`` mark did what only the full tier may do."""


@dataclass
class Watch:
    test: str | None = None  # the fast-tier test now in setup or call
    refused: str | None = None


WATCH = Watch()


def needs_full_tier(item: pytest.Item) -> bool:
    """Whether ``item`` needs the real data, a quick run, PostgreSQL or Chromium (fixtures seen
    through other fixtures too: ``fixturenames`` is the closure)."""
    return any(name in item.fixturenames for name in FULL_TIER_FIXTURES) or any(
        item.get_closest_marker(mark) for mark in FULL_TIER_MARKS
    )


def full_tier_need(event: str, args: tuple) -> str | None:
    """What the audit ``event`` does that only the full tier may do, or None."""
    if event in PROCESS_EVENTS:
        return f"starts a process ({event} {str(args[:2])[:120]})"
    if event in SOCKET_EVENTS:
        return f"opens a socket ({event} {args[1:2]})"
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if path.startswith(str(data.DEBIAN_DIR)):
            return f"reads the real data ({path})"
    return None


def audit(event: str, args: tuple) -> None:
    """The audit hook (``sys.addaudithook``): raise while a fast-tier test needs the full tier."""
    if WATCH.test is None:
        return
    need = full_tier_need(event, args)
    if need is not None:
        WATCH.refused = need
        raise FullTierOnly(f"{WATCH.test} {need}: mark it @pytest.mark.slow (the full tier)")


def guard_spawn() -> None:
    """Make multiprocessing's spawn start (stage processes, tuning workers) an audit event: it
    starts its interpreter through ``_posixsubprocess`` directly, which fires none."""
    import multiprocessing.util as util

    start = util.spawnv_passfds
    if getattr(start, "audited", False):
        return

    def spawnv_passfds(path, args, passfds):
        sys.audit("multiprocessing.spawn", path, args)
        return start(path, args, passfds)

    spawnv_passfds.audited = True
    util.spawnv_passfds = spawnv_passfds


def watched(item: pytest.Item) -> Iterator[None]:
    """Wrap a test's setup or call: a fast-tier one runs watched, and fails if it was refused
    something (even where it caught the error)."""
    if item.get_closest_marker("slow") is not None:
        return (yield)
    WATCH.test, WATCH.refused = item.nodeid, None
    try:
        result = yield
    finally:
        WATCH.test = None
    if WATCH.refused is not None:
        raise FullTierOnly(f"{item.nodeid} {WATCH.refused}: mark it @pytest.mark.slow")
    return result
