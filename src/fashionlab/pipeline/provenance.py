"""Where a run came from, for ``run.json``: versions, the git commit, the data's checksums."""

from __future__ import annotations

import logging
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["versions", "git_commit", "data_checksums", "calibration", "CALIBRATION_WORKLOAD"]

CALIBRATION_WORKLOAD = (
    "one epoch of the 3x50 ReLU MLP on 50,000 synthetic 28x28 images, batch 64, SGD, one CPU "
    "thread, through fashionlab's single-model trainer (the faster of two)"
)


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


def calibration(repeats: int = 2) -> dict[str, Any]:
    """The seconds of a fixed small workload (:data:`CALIBRATION_WORKLOAD`), so that a run's
    seconds on one machine compare with another's: a run's cost in *calibration units* is its
    seconds divided by these. The images are synthetic (seeded noise, as many as the training
    split) so the workload depends on nothing but the machine and the software versions.

    Returns:
        ``{"workload": ..., "seconds": s}``, ``s`` the least of ``repeats`` timings.
    """
    import time

    import torch

    from ..batches import Split
    from ..population import fit, seeded_model
    from ..threads import torch_threads
    from ..train import TrainConfig

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (50_000,), generator=generator)
    split = Split(images, labels)
    config = TrainConfig(epochs=1, batch_size=64, lr=0.01, momentum=0.9, seed=0)
    best = float("inf")
    quiet = logging.getLogger("fashionlab.population")  # no epoch lines from the calibration
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with torch_threads(1):
            for _ in range(repeats):
                model = seeded_model({"hidden_layers": 3, "units": 50}, 0)
                start = time.perf_counter()
                fit(model, split, config)
                best = min(best, time.perf_counter() - start)
    finally:
        quiet.setLevel(level)
    return {"workload": CALIBRATION_WORKLOAD, "seconds": round(best, 3)}
