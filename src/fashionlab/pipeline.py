"""``fashionlab run``: every stage in order into one run directory, cached and resumable.

Each stage writes into ``<run>/<stage>/`` and finishes by writing ``<run>/<stage>/stage.json``
(atomically, last): the stage's resolved config, its config hash, a summary of its results and
its wall time. A stage is skipped when that file exists with the same hash — the hash covers
the stage's own config and the hashes of the stages it depends on, so changing the tuning
budget re-runs tuning, retraining and the report, but not the autoencoder. A killed run
resumes from the last finished stage, and the tuning study (SQLite in ``<run>/tune``)
resumes trial by trial.

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
              only: Sequence[str] | None = None, progress: bool = True,
              echo: Callable[[str], None] = print) -> list[StageOutcome]:
    """Run (or reuse) every stage of the study into ``run_dir`` and build the report.

    Args:
        run_dir: the run directory (created if needed).
        study: seed, device, quick mode and per-stage overrides.
        force: stage names to redo, with everything downstream of them.
        only: if given, run only these stages (and the cached results of their dependencies).
        progress: tqdm bars inside stages.
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
    outcomes: list[StageOutcome] = []
    for index, stage in enumerate(stages, 1):
        config = resolved[stage.name]
        hashes[stage.name] = _hash({"config": config, "seed": study.seed, "device": device,
                                    "upstream": [hashes[d] for d in stage.depends]})
        marker = run_dir / stage.name / STAGE_FILE
        done = read_json(marker) if marker.is_file() else None
        head = f"[{index}/{len(stages)} {stage.name}]"
        if done is not None and done.get("config_hash") == hashes[stage.name]:
            summaries[stage.name] = done["summary"]
            outcomes.append(StageOutcome(stage.name, "cached", done["seconds"], done["summary"]))
            echo(f"{head} cached ({done['seconds']:.1f} s when it ran)")
            continue
        if only is not None and stage.name not in only:
            if any(o in _downstream([stage.name]) for o in only):
                raise ConfigError(f"stage {stage.name!r} is needed first; run without --only, "
                                  f"or with --only {stage.name}")
            continue
        echo(f"{head} {stage.title or stage.name} ...")
        context = StageContext(run_dir, study, device, progress, {d: summaries[d] for d in stage.depends})
        start = time.perf_counter()
        summary = stage.run(run_dir / stage.name, config, context)
        seconds = time.perf_counter() - start
        atomic_write_json(marker, {"stage": stage.name, "config_hash": hashes[stage.name], "config": config,
                                   "summary": summary, "seconds": seconds,
                                   "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        record["stage_seconds"][stage.name] = seconds
        atomic_write_json(run_json, record)
        summaries[stage.name] = summary
        outcomes.append(StageOutcome(stage.name, "ran", seconds, summary))
        echo(f"{head} done in {seconds:.1f} s")
    return outcomes


def _stages() -> tuple[Stage, ...]:
    """The stage table (in ``fashionlab.stages``, which imports this module's classes)."""
    from .stages import STAGES

    return STAGES
