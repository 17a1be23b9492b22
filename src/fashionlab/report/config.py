"""Settings of the report stage: who wrote it, for which course."""

from __future__ import annotations

from dataclasses import dataclass

from ..canonical import Canonical
from ..errors import ConfigError

__all__ = ["ReportConfig", "DEFAULT_COURSE"]

DEFAULT_COURSE = "CS/DS 541, Homework 3"


@dataclass(frozen=True)
class ReportConfig(Canonical):
    """Settings of the report (``[report]`` in a config file, ``--author`` on the command line).

    Args:
        authors: the names on the cover, in order (default: none; the cover then names the
            ``git config user.name`` of the machine that builds it, else no author at all).
        course: the course line on the cover (default: ``DEFAULT_COURSE``).
    """

    authors: tuple[str, ...] = ()
    course: str = DEFAULT_COURSE

    def __post_init__(self) -> None:
        object.__setattr__(self, "authors", tuple(self.authors))
        for name in self.authors:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(
                    f"authors must be non-empty names, got {name!r}; fix: --author 'First Last'"
                )
        if not isinstance(self.course, str):
            raise ConfigError(
                f'course must be a string, got {self.course!r}; fix: course = "CS 541, HW 3"'
            )
