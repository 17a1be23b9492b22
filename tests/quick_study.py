"""The finished quick study that the full tier's run-folder tests share (fixtures in
conftest.py: ``quick_run`` to read it, ``quick_run_copy`` to change a copy)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fashionlab.pipeline import StudyConfig

# The quick study with the reference row and the ablation on, so that it writes every file that
# docs/run-directory.md describes.
QUICK_OVERRIDES = {"tune": {"reference": True}, "classifier": {"ablation": True}}


@dataclass(frozen=True)
class QuickRun:
    """A finished ``fashionlab run --quick`` study: its folder, its settings, what it said."""

    folder: Path
    study: StudyConfig
    outcomes: tuple
    lines: tuple[str, ...]

    def study_with(self, **overrides: dict[str, Any]) -> StudyConfig:
        """The study's settings with ``overrides`` merged into its per-stage overrides."""
        return replace(self.study, overrides={**self.study.overrides, **overrides})


def fingerprint(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
