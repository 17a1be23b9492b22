"""The He-initialization stage: identity checks, depth experiment, results.json and figures.

File formats: ``docs/run-directory.md`` (``heinit/``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ...atomic import atomic_write_json
from ...runtime import Stopwatch
from .config import HeInitConfig
from .depth import DepthResult, depth_experiment
from .identities import HeInitResult, verify_he_init

__all__ = ["HeInitRun", "results_dict", "run_heinit", "RESULTS_FILE"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
DEPTH_FIGURE = "depth_variance"
IDENTITY_FIGURE = "identities"

# --- the stage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeInitRun:
    """What :func:`run_heinit` computed and wrote."""

    verification: HeInitResult
    depth: tuple[DepthResult, ...]
    files: tuple[Path, ...]
    seconds: float


def _finite_or_none(values: tuple[float, ...]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def results_dict(
    verification: HeInitResult, depth: tuple[DepthResult, ...], seconds: float
) -> dict[str, Any]:
    """The ``results.json`` document (``docs/run-directory.md``)."""
    config = verification.config
    return {
        "schema_version": 1,
        "config": dataclasses.asdict(config),
        "z": config.z,
        "identities": [row.to_dict() for row in verification.identities],
        "kaiming": [{**dataclasses.asdict(k), "holds": k.holds} for k in verification.kaiming],
        "depth": {
            "depth": config.depth,
            "width": config.width,
            "batch": config.depth_batch,
            "layers": list(range(1, config.depth + 1)),
            "experiments": [
                {
                    "activation": d.activation,
                    "negative_slope": d.negative_slope,
                    "curves": [
                        {
                            "scheme": c.scheme,
                            "label": c.label,
                            "std": c.std,
                            "forward_var": _finite_or_none(c.forward_var),
                            "backward_var": _finite_or_none(c.backward_var),
                        }
                        for c in d.curves
                    ],
                }
                for d in depth
            ],
        },
        "figures": {
            key: [f"{stem}.png", f"{stem}.pdf"]
            for key, stem in (("depth", DEPTH_FIGURE), ("identities", IDENTITY_FIGURE))
        },
        "seconds": seconds,
    }


def run_heinit(
    out_dir: str | os.PathLike[str], config: HeInitConfig | None = None, *, progress: bool = True
) -> HeInitRun:
    """The He-initialization stage: identity checks, depth experiment, results.json and figures.

    Args:
        out_dir: stage directory (e.g. ``runs/NAME/heinit``); the only place files are written.
        config: ``HeInitConfig`` (default settings when None).
        progress: show tqdm bars.

    Returns:
        ``HeInitRun`` with the results and the paths written (results.json, PNG and PDF figures).
    """
    from .plots import plot_depth, plot_identities  # matplotlib only when figures are wanted

    config = config or HeInitConfig()
    out_dir = Path(out_dir)
    with Stopwatch() as watch:
        verification = verify_he_init(config, progress=progress)
        depth = tuple(
            depth_experiment(
                activation,
                depth=config.depth,
                width=config.width,
                batch=config.depth_batch,
                negative_slope=config.negative_slope,
                seed=config.seed,
            )
            for activation in tqdm(
                ("relu", "leaky_relu"), desc="depth", disable=not progress, leave=False
            )
        )
        files = [
            *plot_depth(depth, out_dir / DEPTH_FIGURE),
            *plot_identities(verification, out_dir / IDENTITY_FIGURE),
        ]
    for row in verification.unexpected():
        logger.warning(
            "identity %s (%s): holds=%s but expected_to_hold=%s",
            row.name,
            row.case,
            row.holds,
            row.expected_to_hold,
        )
    files.append(
        atomic_write_json(out_dir / RESULTS_FILE, results_dict(verification, depth, watch.seconds))
    )
    logger.info(
        "heinit: %d identities, %d as expected; wrote %s in %.1f s",
        len(verification.identities),
        len(verification.identities) - len(verification.unexpected()),
        out_dir,
        watch.seconds,
    )
    return HeInitRun(verification, depth, tuple(files), watch.seconds)
