"""Settings of the report stage: who wrote it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["ReportConfig"]


@dataclass(frozen=True)
class ReportConfig:
    """Settings of the report (``[report]`` in a config file, ``--author`` on the command line).

    Args:
        authors: the names on the cover, in order (default: none; the cover then shows a visible
            placeholder to fill in).
    """

    authors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "authors", tuple(self.authors))
        for name in self.authors:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(
                    f"authors must be non-empty names, got {name!r}; fix: --author 'First Last'"
                )
