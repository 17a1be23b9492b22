"""What a stage table is made of: the study's settings, a stage (with its typed config), what a
stage is given, what it returned; and which stages depend on which.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["StudyConfig", "StageConfig", "StageContext", "Stage", "StageOutcome", "downstream"]


class StageConfig(Protocol):
    """What the engine needs of a stage's config: its canonical dict (hashed and recorded)."""

    def to_dict(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=StageConfig)


@dataclass(frozen=True)
class StudyConfig:
    """What ``fashionlab run`` was asked to do.

    ``overrides`` maps a stage name to fields of that stage's config dataclass (``Stage.config``),
    as plain values (from a TOML file: one table per stage, e.g. ``[tune] n_trials = 30``); the
    stage's ``resolve`` puts them on top of its preset with the config's ``from_dict``.
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
class Stage(Generic[C]):
    """One step of the study, with its config dataclass ``config`` (the class that its config-file
    table ``[name]`` fills).

    ``resolve`` builds the stage's config (an instance of ``config``) from the study; the engine
    records and hashes its ``to_dict()`` and hands the same object to ``run``, which does the work
    in the stage's folder and returns a small summary (``headline``: the line of the final table).
    """

    name: str
    depends: tuple[str, ...]
    config: type[C]
    resolve: Callable[[StudyConfig], C]
    run: Callable[[Path, C, StageContext], dict[str, Any]]
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
