"""Stages in worker processes: each on one CPU thread, several at once when they are independent.

Every worker is a child that dies with this process (:mod:`fashionlab._processes`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import _processes
from .._interrupts import check as check_interrupt
from .._log_setup import configure_logging
from ..threads import DEFAULT_THREADS, torch_threads
from .table import Stage, StageContext

__all__ = ["default_jobs", "run_stage", "schedule"]


def default_jobs() -> int:
    """How many independent stages run at once when the caller does not say: 2 where the machine
    has two CPUs or more (the plain and the variant tuning chains side by side), else 1."""
    return min(2, os.cpu_count() or 1)


def run_stage(
    stage: Stage[Any],
    stage_dir: Path,
    config: Any,
    context: StageContext,
    log_level: int | None = None,
) -> tuple[dict[str, Any], float]:
    """Run one stage on one CPU thread (so results do not depend on ``jobs``) with its resolved
    config (an instance of ``stage.config``); return (summary, seconds)."""
    if log_level is not None:  # in a worker process: log like the parent, prefixed with the stage
        configure_logging(log_level, f"[{stage.name}] %(message)s", force=True)
    check_interrupt()
    start = time.perf_counter()
    with torch_threads(DEFAULT_THREADS):
        summary = stage.run(stage_dir, config, context)
    return summary, time.perf_counter() - start


def schedule(
    todo: list[Stage[Any]],
    jobs: int,
    summaries: dict[str, dict[str, Any]],
    arguments: Callable[[Stage[Any]], tuple[Any, ...]],
    finish: Callable[[Stage[Any], dict[str, Any], float], None],
    echo: Callable[[str], None],
) -> None:
    """Run ``todo`` in up to ``jobs`` spawned processes, each stage once its dependencies are done.

    Stages are started in table order as they become ready. If one fails (or its process dies),
    the running ones are allowed to finish (their results are kept) and the first error is
    raised. An interrupt stops them all at once; each stage process dies with this one.
    """
    pending = list(todo)
    running: dict[_processes.Child, Stage[Any]] = {}
    error: BaseException | None = None
    log_level = logging.getLogger().getEffectiveLevel()
    try:
        while pending or running:
            for stage in list(pending):
                if (
                    error is None
                    and len(running) < jobs
                    and all(d in summaries for d in stage.depends)
                ):
                    echo(f"[{stage.name}] {stage.title or stage.name} ...")
                    child = _processes.start(
                        run_stage, (*arguments(stage), log_level), name=f"stage {stage.name}"
                    )
                    running[child] = stage
                    pending.remove(stage)
            if not running:
                break
            for child, outcome in _processes.wait_any(list(running)):
                stage = running.pop(child)
                try:
                    finish(stage, *outcome.result())
                except Exception as exc:  # re-raised below, after the others finish
                    echo(f"[{stage.name}] failed: {exc}")
                    error = error or exc
    finally:
        _processes.stop(list(running))  # only after an interrupt or a bug here: none is left
    if error is not None:
        raise error
