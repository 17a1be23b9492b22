"""``fashionlab run`` with the study's own stage table: configs checked whole, then run."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .engine import run_stages
from .stages import STAGES, check_stages, check_tables
from .table import StageOutcome, StudyConfig

__all__ = ["load_study_config", "study_config", "check_study", "run_study", "stage_order"]


def load_study_config(path: str | Path | None, **fields: Any) -> StudyConfig:
    """A :class:`StudyConfig` from CLI fields plus an optional TOML file of per-stage tables.

    Raises:
        ConfigError: an unreadable file, invalid TOML, or a table, key or value that
            :class:`StudyConfig` refuses (the message starts with the file).
    """
    if path is None:
        return study_config(**fields)
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for key, value in document.items():
        if not isinstance(value, dict):
            stages = ", ".join(stage_order())
            raise ConfigError(
                f"{path}: top-level key {key!r} is not a table; settings go in the "
                f"table of their stage, e.g. [tune] n_trials = 30 (stages: {stages})"
            )
    try:
        return study_config(overrides=document, **fields)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def study_config(**fields: Any) -> StudyConfig:
    """A :class:`StudyConfig` whose per-stage tables are checked against the stage table: each
    key against a field of its stage's config dataclass (the one place the tables are checked).

    Raises:
        ConfigError: an unknown table or key, or a value of the wrong type or shape.
    """
    return StudyConfig(**{**fields, "overrides": check_tables(fields.get("overrides", {}))})


def check_study(study: StudyConfig, only: Sequence[str] | None = None) -> None:
    """Check, before any stage starts or anything is written, what the stages will need.

    Builds every stage's config dataclass (the landscape's model too) and finds the Fashion-MNIST
    files read by the stages to run (``only``, or all of them; a missing file is downloaded where
    the data layer's search order allows it).

    Raises:
        ConfigError: an impossible setting of any stage.
        DataError: a file that a stage to run reads is missing.
    """
    names = stage_order()
    check_stages(study, [name for name in (only or names) if name in names])


def stage_order() -> list[str]:
    return [stage.name for stage in STAGES]


def run_study(
    run_dir: str | Path,
    study: StudyConfig,
    *,
    force: Sequence[str] = (),
    only: Sequence[str] | None = None,
    progress: bool = True,
    jobs: int | None = None,
    echo: Callable[[str], None] = print,
    wait: bool = False,
) -> list[StageOutcome]:
    """Run (or reuse) every stage of the study into ``run_dir`` and build the report.

    The arguments are those of :func:`~fashionlab.pipeline.engine.run_stages`, whose table here
    is the study's own (:data:`~fashionlab.pipeline.stages.STAGES`). Before anything is written,
    every stage's settings are checked and the data files the stages to run need are found.
    The study's tables are checked key by key here (:func:`check_tables`), also when they were
    set in code rather than read from a config file.

    Returns:
        One :class:`StageOutcome` per stage, in order.

    Raises:
        ConfigError: an impossible or unknown setting, an unknown stage name, a dependency of
            ``only`` that has not run, or a folder of other settings (see ``run_stages``).
        DataError: a data file that a stage to run reads is missing.
        FolderInUseError: another process holds the folder's lock (and ``wait`` is false).
        FolderNotOursError: the folder holds files fashionlab did not write (see ``run_stages``).
        StorageError: a file or database cannot be written or read (disk full, read-only, ...).
    """
    names = stage_order()
    for name in [*(n for n in force if n != "all"), *(only or [])]:
        if name not in names:
            raise ConfigError(f"unknown stage {name!r}; stages are {names} (or all, for --force)")
    study = dataclasses.replace(study, overrides=check_tables(study.overrides))
    check_study(study, only)
    return run_stages(
        run_dir,
        study,
        STAGES,
        force=force,
        only=only,
        progress=progress,
        jobs=jobs,
        echo=echo,
        wait=wait,
    )
