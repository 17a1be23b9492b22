"""``fashionlab run``: every stage in order into one run directory, cached and resumable.

Each stage writes into ``<run>/<stage>/`` and finishes by writing ``<run>/<stage>/stage.json``
(atomically, last): the stage's resolved config, its config hash, a summary of its results and
its wall time. A stage is skipped when that file exists with the same hash — the hash covers
the stage's own config and the hashes of the stages it depends on, so changing the tuning
budget re-runs tuning, retraining and the report, but not the autoencoder. A killed run
resumes from the last finished stage, and the tuning study (SQLite in ``<run>/tune``)
resumes trial by trial.

Independent stages can run at once (``jobs=2``: the plain and the variant tuning chains side by
side, the autoencoder in a gap), each in its own spawned process. Every stage runs on one CPU
thread in either mode, so ``jobs`` changes the wall time, not the numbers.

``force=("tune",)`` moves ``<run>/tune`` to ``<run>/tune.previous`` (nothing is deleted until
the next force) and re-runs it and everything downstream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .utils import atomic_write_json, read_json, resolve_device

__all__ = ["StudyConfig", "Stage", "StageContext", "StageOutcome", "run_study", "load_study_config", "stage_order"]

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"


@dataclass(frozen=True)
class StudyConfig:
    """What ``fashionlab run`` was asked to do.

    ``overrides`` maps a stage name to keyword arguments for that stage's config dataclass
    (from a TOML file: one table per stage, e.g. ``[tune] n_trials = 30``).
    """

    seed: int = 0
    device: str = "auto"
    quick: bool = False
    data_dir: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.overrides) - {s.name for s in _stages()})
        if unknown:
            raise ConfigError(f"config file names unknown stage(s) {unknown}; known: {stage_order()}")

    def stage_overrides(self, stage: str) -> dict[str, Any]:
        return dict(self.overrides.get(stage, {}))


@dataclass(frozen=True)
class StageContext:
    """What a stage function gets besides its directory and config."""

    run_dir: Path
    study: StudyConfig
    device: str
    progress: bool
    upstream: dict[str, dict[str, Any]]  # summaries of the stages it depends on


@dataclass(frozen=True)
class Stage:
    """One step of the study: ``resolve`` builds its config dict, ``run`` does the work."""

    name: str
    depends: tuple[str, ...]
    resolve: Callable[[StudyConfig], dict[str, Any]]
    run: Callable[[Path, dict[str, Any], StageContext], dict[str, Any]]
    title: str = ""


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "cached"
    seconds: float
    summary: dict[str, Any]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_study_config(path: str | Path | None, **fields: Any) -> StudyConfig:
    """A :class:`StudyConfig` from CLI fields plus an optional TOML file of per-stage tables.

    Raises:
        ConfigError: unreadable TOML, or tables that are not stage names.
    """
    overrides: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        for key, value in document.items():
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: top-level key {key!r} must be a table [stage] of settings")
            overrides[key] = value
    return StudyConfig(overrides=overrides, **fields)


def stage_order() -> list[str]:
    return [stage.name for stage in _stages()]


def _downstream(names: Sequence[str]) -> set[str]:
    """``names`` and every stage that depends on them, transitively."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(s.name for s in _stages() if name in s.depends)
    return seen


def _versions() -> dict[str, str]:
    import numpy
    import optuna
    import torch
    import torchvision

    from . import __version__

    return {"python": platform.python_version(), "fashionlab": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "optuna": optuna.__version__, "numpy": numpy.__version__,
            "platform": platform.platform()}


def _git_commit() -> dict[str, Any] | None:
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def _data_checksums(data_dir: str | None) -> dict[str, Any]:
    from .data import verify

    source, rows = verify(data_dir)
    return {"source": f"{source.path} ({source.kind})",
            "files": {row.key: row.sha256 if row.ok else f"FAILED: {row.message}" for row in rows}}


def run_study(run_dir: str | Path, study: StudyConfig, *, force: Sequence[str] = (),
              only: Sequence[str] | None = None, progress: bool = True, jobs: int = 1,
              echo: Callable[[str], None] = print) -> list[StageOutcome]:
    """Run (or reuse) every stage of the study into ``run_dir`` and build the report.

    Args:
        run_dir: the run directory (created if needed).
        study: seed, device, quick mode and per-stage overrides.
        force: stage names to redo, with everything downstream of them.
        only: if given, run only these stages (and the cached results of their dependencies).
        progress: tqdm bars inside stages (only with ``jobs=1``; parallel stages log a line per epoch).
        jobs: how many independent stages run at once, each in its own process. Every stage runs on
            one CPU thread whatever ``jobs`` is, so the results do not depend on it.
        echo: where the per-stage lines and the final table go.

    Returns:
        One :class:`StageOutcome` per stage, in order.

    Raises:
        ConfigError: unknown stage names, or a dependency of ``only`` has not been run.
    """
    names = stage_order()
    for name in [*force, *(only or [])]:
        if name not in names:
            raise ConfigError(f"unknown stage {name!r}; stages are {names}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = str(resolve_device(study.device))
    redo = _downstream(force)
    for name in redo & {n for n in names if (run_dir / n).exists()}:
        previous = run_dir / f"{name}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        (run_dir / name).rename(previous)
        echo(f"[{name}] forced: previous outputs moved to {previous}")

    run_json = run_dir / "run.json"
    record: dict[str, Any] = read_json(run_json) if run_json.is_file() else {}
    stages = _stages()
    resolved = {stage.name: stage.resolve(study) for stage in stages}
    record.update({
        "seed": study.seed, "device": device, "quick": study.quick, "config": resolved,
        "versions": _versions(), "git": _git_commit(), "data": _data_checksums(study.data_dir),
        "command": " ".join(sys.argv), "stage_seconds": record.get("stage_seconds", {}),
    })
    atomic_write_json(run_json, record)

    hashes: dict[str, str] = {}
    summaries: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, StageOutcome] = {}
    todo: list[Stage] = []
    for stage in stages:
        hashes[stage.name] = _hash({"config": resolved[stage.name], "seed": study.seed, "device": device,
                                    "upstream": [hashes[d] for d in stage.depends]})
        marker = run_dir / stage.name / STAGE_FILE
        done = read_json(marker) if marker.is_file() else None
        if done is not None and done.get("config_hash") == hashes[stage.name]:
            summaries[stage.name] = done["summary"]
            outcomes[stage.name] = StageOutcome(stage.name, "cached", done["seconds"], done["summary"])
            echo(f"[{stage.name}] cached ({done['seconds']:.1f} s when it ran)")
        elif only is None or stage.name in only:
            todo.append(stage)
    for stage in todo:  # every dependency must be cached or run now
        for dep in stage.depends:
            if dep not in summaries and dep not in {t.name for t in todo}:
                raise ConfigError(f"stage {dep!r} is needed before {stage.name!r}; run without --only, "
                                  f"or add --only {dep}")

    def finish(stage: Stage, summary: dict[str, Any], seconds: float) -> None:
        atomic_write_json(run_dir / stage.name / STAGE_FILE, {
            "stage": stage.name, "config_hash": hashes[stage.name], "config": resolved[stage.name],
            "summary": summary, "seconds": seconds, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        record["stage_seconds"][stage.name] = seconds
        atomic_write_json(run_json, record)
        summaries[stage.name] = summary
        outcomes[stage.name] = StageOutcome(stage.name, "ran", seconds, summary)
        echo(f"[{stage.name}] done in {seconds:.1f} s — {summary.get('headline', '')}")

    def context(stage: Stage) -> StageContext:
        return StageContext(run_dir, study, device, progress and jobs == 1,
                            {d: summaries[d] for d in stage.depends})

    if jobs <= 1 or len(todo) <= 1:
        for stage in todo:
            echo(f"[{stage.name}] {stage.title or stage.name} ...")
            finish(stage, *_run_stage(stage.name, run_dir / stage.name, resolved[stage.name], context(stage)))
    else:
        _schedule(todo, jobs, summaries, lambda st: (st.name, run_dir / st.name, resolved[st.name], context(st)),
                  finish, echo)
    return [outcomes[stage.name] for stage in stages if stage.name in outcomes]


def _run_stage(name: str, stage_dir: Path, config: dict[str, Any], context: StageContext,
               log_level: int | None = None) -> tuple[dict[str, Any], float]:
    """Run one stage on one CPU thread (so results do not depend on ``jobs``); return (summary, seconds)."""
    import torch

    if log_level is not None:  # in a worker process: log like the parent, prefixed with the stage
        logging.basicConfig(level=log_level, format=f"[{name}] %(message)s", stream=sys.stderr, force=True)
        for noisy in ("optuna", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    stage = next(s for s in _stages() if s.name == name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        summary = stage.run(stage_dir, config, context)
    finally:
        torch.set_num_threads(threads)
    return summary, time.perf_counter() - start


def _schedule(todo: list[Stage], jobs: int, summaries: dict[str, dict[str, Any]],
              arguments: Callable[[Stage], tuple[Any, ...]],
              finish: Callable[[Stage, dict[str, Any], float], None], echo: Callable[[str], None]) -> None:
    """Run ``todo`` in up to ``jobs`` spawned processes, each stage once its dependencies are done.

    Stages are started in table order as they become ready. If one fails (or its process dies),
    the running ones are allowed to finish (their results are kept) and the first error is
    raised. An interrupt stops them all at once; each stage process dies with this one.
    """
    from . import _processes

    pending = list(todo)
    running: dict[_processes.Child, Stage] = {}
    error: BaseException | None = None
    log_level = logging.getLogger().getEffectiveLevel()
    try:
        while pending or running:
            for stage in list(pending):
                if error is None and len(running) < jobs and all(d in summaries for d in stage.depends):
                    echo(f"[{stage.name}] {stage.title or stage.name} ...")
                    child = _processes.start(_run_stage, (*arguments(stage), log_level),
                                             name=f"stage {stage.name}")
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


def _stages() -> tuple[Stage, ...]:
    """The stage table (in ``fashionlab.stages``, which imports this module's classes)."""
    from .stages import STAGES

    return STAGES
