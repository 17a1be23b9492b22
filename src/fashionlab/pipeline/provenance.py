"""Where a run came from, for ``run.json``: versions, the git commit, the data's checksums."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["versions", "git_commit", "data_checksums"]


def versions() -> dict[str, str]:
    import numpy
    import optuna
    import torch
    import torchvision

    from .. import __version__

    return {
        "python": platform.python_version(),
        "fashionlab": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def git_commit() -> dict[str, Any] | None:
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=source, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def data_checksums(data_dir: str | None) -> dict[str, Any]:
    from ..data_check import verify

    source, rows = verify(data_dir)
    return {
        "source": f"{source.path} ({source.kind})",
        "files": {row.key: row.sha256 if row.ok else f"FAILED: {row.message}" for row in rows},
    }
