"""The loss landscape of a trajectory: its PCA plane, the loss on a grid of that plane (evaluated
by :mod:`.grid`), each snapshot's own loss, and the ``surface.npz`` that holds them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...atomic import atomic_save_npz
from ...runtime import Stopwatch
from .basin import basin_minimum, edges_touched
from .grid import _Evaluator
from .plane import Margin, PCAPlane, grid_axes, pca_plane
from .trajectory import (
    Trajectory,
    _buffer_layout,
    _float_buffers,
    _shape_str,
    check_trajectory,
)

__all__ = [
    "LandscapeResult",
    "loss_landscape",
    "save_surface_npz",
]

logger = logging.getLogger(__name__)

# Layers whose output is linear in (weight, bias) jointly: factorised when they read the raw input.
# --- the landscape --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LandscapeResult:
    """The loss grid, the plane and the path; ``loss[k, l]`` is at ``(a[l], b[k])``."""

    a: np.ndarray
    b: np.ndarray
    loss: np.ndarray  # (len(b), len(a))
    plane: PCAPlane
    trajectory: Trajectory
    trajectory_loss: np.ndarray  # (K,) each snapshot's own loss
    trajectory_plane_loss: np.ndarray  # (K,) loss at its projection onto the plane
    centre_loss: float
    n_examples: int
    buffers: np.ndarray  # (B,) floating buffers used at every grid point
    buffer_names: tuple[str, ...]
    buffer_shapes: tuple[tuple[int, ...], ...]
    points_per_chunk: int
    examples_per_chunk: int
    input_layer: str | None  # the factorised raw-input layer, None if the generic path ran
    grid_seconds: float
    margin: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)  # low a, high a, low b,
    margin_growths: int = 0  # how often a side was widened until every basin was interior

    @property
    def coords(self) -> np.ndarray:
        return self.plane.coords

    @property
    def n_points(self) -> int:
        return int(self.loss.size)

    @property
    def points_per_second(self) -> float:
        return self.n_points / self.grid_seconds if self.grid_seconds > 0 else math.inf


def loss_landscape(
    model: nn.Module,
    trajectory: Trajectory,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    resolution: int = 31,
    margin: Margin = 0.25,
    margin_growths: int = 0,
    memory_budget_mb: float = 128.0,
    device: str | torch.device = "cpu",
    criterion: Callable | None = None,
    factor_input_layer: bool = True,
    progress: bool = False,
) -> LandscapeResult:
    """The loss surface on the PCA plane of ``trajectory`` and the real loss of every snapshot.

    Works for any module and any (X, y): ``criterion(model(X), y)`` is the mean loss (default
    cross-entropy, i.e. the unregularised f_CE). BatchNorm runs on running stats, dropout is off;
    the grid uses the buffers of ``model`` (normally the final model of run 0), each snapshot its
    own.

    Args:
        model: the architecture of the snapshots (its parameters are not used, its buffers are).
        trajectory: snapshots from :class:`TrajectoryRecorder` (one or several runs).
        X, y: the examples the heights are evaluated on.
        resolution: grid points per axis (>= 2).
        margin: extra range on each side, as a fraction of the path's extent (or four of them:
            low a, high a, low b, high b).
        margin_growths: widen the grid up to this many times: while the surface's minimum near a
            run's final model (:func:`.basin.basin_minimum`) lies on the grid's edge, double the
            margin of that side and evaluate the grid again.
        memory_budget_mb: memory for one chunk of grid points; the chunk size follows from it.
        device: where to evaluate.
        criterion: mean loss of (output, target); default ``F.cross_entropy``.
        factor_input_layer: use z0 + a z1 + b z2 for a raw-input Linear/Conv (same values, faster).
        progress: tqdm bar over the grid points.

    Returns:
        :class:`LandscapeResult`.

    Raises:
        ConfigError: see :func:`check_trajectory` and :func:`grid_axes`; a memory budget too small.
    """
    check_trajectory(trajectory, model)
    plane = pca_plane(trajectory)
    grid_axes(plane.coords, resolution, margin)  # refuse a bad grid before any work
    evaluator = _Evaluator(
        model, X, y, criterion=criterion, memory_budget_mb=memory_budget_mb, device=device
    )
    a, b, grid, seconds, sides, growths = _grid_with_margins(
        evaluator,
        plane,
        trajectory,
        margin,
        resolution=resolution,
        margin_growths=margin_growths,
        factor_input_layer=factor_input_layer,
        progress=progress,
    )
    own, plane_losses, centre_loss = _path_losses(evaluator, plane, trajectory, factor_input_layer)
    return LandscapeResult(
        a,
        b,
        grid.reshape(len(b), len(a)),
        plane,
        trajectory,
        own,
        plane_losses,
        centre_loss,
        evaluator.n,
        *_model_buffers(model),
        evaluator.points_per_chunk,
        evaluator.examples_per_chunk,
        evaluator.used_input_layer,
        seconds,
        sides,
        growths,
    )


def _grid_with_margins(
    evaluator: _Evaluator,
    plane: PCAPlane,
    trajectory: Trajectory,
    margin: Margin,
    *,
    resolution: int,
    margin_growths: int,
    factor_input_layer: bool,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, tuple[float, float, float, float], int]:
    """Evaluate the grid, widening a side while a run's basin minimum is on it (at most
    ``margin_growths`` times); returns the axes, the flat grid losses, the grid's seconds, the
    four margins used and the number of growths."""
    sides = list(margin) if isinstance(margin, (tuple, list)) else [margin] * 4
    finals = plane.coords[[trajectory.final_index(r) for r in trajectory.runs()]]
    seconds, growths = 0.0, 0
    # Margins are found on a coarse grid first (cheap), then checked again on the real one.
    probe = min(resolution, 11) if margin_growths else resolution
    while True:
        size = probe if probe < resolution else resolution
        a, b = grid_axes(plane.coords, size, tuple(sides))
        mesh = np.stack([g.ravel() for g in np.meshgrid(a, b)], axis=1)  # (Rb * Ra, 2): a fastest
        with Stopwatch() as watch:
            grid = evaluator.plane(
                plane.centre,
                plane.directions,
                mesh,
                factor_input_layer=factor_input_layer,
                progress=progress and size == resolution,
            )
        seconds += watch.seconds
        surface = grid.reshape(len(b), len(a))
        touched = {
            side
            for point in finals
            for side in edges_touched(basin_minimum(surface, a, b, point), surface.shape)
        }
        if touched and growths < margin_growths:
            for side in touched:
                sides[side] = 2 * sides[side] if sides[side] > 0 else 0.25
            growths += 1
            logger.info("landscape: a basin's minimum is on the grid's edge; margins now %s", sides)
        elif size < resolution:
            probe = resolution  # the margins hold on the coarse grid: evaluate the real one
        else:
            break
    if not np.isfinite(grid).all():
        logger.warning(
            "landscape: %d of %d grid losses are not finite",
            int((~np.isfinite(grid)).sum()),
            grid.size,
        )
    return a, b, grid, seconds, (sides[0], sides[1], sides[2], sides[3]), growths


def _path_losses(
    evaluator: _Evaluator, plane: PCAPlane, trajectory: Trajectory, factor_input_layer: bool
) -> tuple[np.ndarray, np.ndarray, float]:
    """Each snapshot's own loss, the loss at its projection onto the plane, and the loss at the
    plane's centre."""
    extra = evaluator.plane(
        plane.centre,
        plane.directions,
        np.vstack([np.zeros((1, 2)), plane.coords]),
        factor_input_layer=factor_input_layer,
    )
    own = evaluator.points(trajectory.params, trajectory.buffers)
    return own, extra[1:], float(extra[0])


def _model_buffers(
    model: nn.Module,
) -> tuple[np.ndarray, tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """The model's float buffers as one flat float array, with their names and shapes."""
    floats = _float_buffers(model)
    flat_buffers = (
        torch.cat([t.detach().reshape(-1).cpu() for _, t in floats]).numpy()
        if floats
        else np.zeros(0, np.float32)
    )
    names, _, shapes = _buffer_layout(model)
    return flat_buffers, tuple(names), tuple(shapes)


def save_surface_npz(path: str | os.PathLike[str], result: LandscapeResult, **extra: Any) -> Path:
    """Write ``surface.npz`` (keys in the module docstring) plus any ``extra`` arrays,
    atomically."""
    plane, trajectory = result.plane, result.trajectory
    return atomic_save_npz(
        path,
        d1=plane.directions[0],
        d2=plane.directions[1],
        centre=plane.centre,
        a=result.a,
        b=result.b,
        loss=result.loss,
        trajectory_coords=plane.coords,
        trajectory_loss=result.trajectory_loss,
        trajectory_plane_loss=result.trajectory_plane_loss,
        trajectory_residual=plane.residual,
        trajectory_run=trajectory.run,
        trajectory_step=trajectory.step,
        trajectory_epoch_fraction=trajectory.epoch_fraction,
        explained_variance_ratio=plane.explained_variance_ratio,
        explained_variance=plane.explained_variance,
        centre_loss=np.float64(result.centre_loss),
        buffers=result.buffers,
        buffer_names=np.array(result.buffer_names, dtype=str),
        buffer_shapes=np.array([_shape_str(s) for s in result.buffer_shapes], dtype=str),
        param_names=np.array(trajectory.param_names, dtype=str),
        param_shapes=np.array([_shape_str(s) for s in trajectory.param_shapes], dtype=str),
        construction=np.array(plane.construction),
        n_examples=np.int64(result.n_examples),
        **extra,
    )
