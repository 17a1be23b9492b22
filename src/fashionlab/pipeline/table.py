"""What a stage table is made of: the study's settings, a stage, what a stage is given, what it
returned; and which stages depend on which.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StudyConfig", "StageContext", "Stage", "StageOutcome", "downstream"]


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
    outputs: tuple[str, ...] = ()  # files it writes outside its folder, relative to the run folder
    # Settings whose change the stage carries out in its own folder without mixing results
    # (the tuning study's budget: more trials resume the same study): the stage runs again.
    in_place: tuple[str, ...] = ()


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "cached"
    seconds: float
    summary: dict[str, Any]


def downstream(stages: Sequence[Stage], names: Sequence[str]) -> set[str]:
    """``names`` and every stage of ``stages`` that depends on them, transitively."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(s.name for s in stages if name in s.depends)
    return seen
