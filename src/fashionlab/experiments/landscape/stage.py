"""The landscape stage: train ``runs`` models from different initialisations until each settles
(:mod:`.training`), evaluate their joint PCA plane with margins grown until each run's basin is
inside the grid (:mod:`.evaluate`), check the basin criterion (:mod:`.basin`), explain the largest
spike on each path, and write ``trajectory.npz``, ``surface.npz``, the figures and
``landscape.json`` (``docs/run-directory.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ...atomic import atomic_write_json
from ...errors import ConfigError
from ...runtime import Stopwatch, resolve_device, seed_everything
from ...threads import torch_threads
from .basin import basin_check
from .config import LandscapeConfig, ModelSpec, model_label
from .evaluate import LandscapeResult, loss_landscape, save_surface_npz
from .training import RunLog, explain_spike, train_run
from .trajectory import Trajectory

if TYPE_CHECKING:
    from ...data import Split

__all__ = ["LandscapeRun", "build_landscape_model", "run_landscape"]

logger = logging.getLogger(__name__)

TRAJECTORY_FILE, SURFACE_FILE, SUMMARY_FILE = "trajectory.npz", "surface.npz", "landscape.json"
FIGURE_STEM, HTML_FILE = "landscape", "landscape.html"
TWO_RUNS_STEM = "landscape_two_runs"  # the joint plane of all runs (with more than one run)


def build_landscape_model(spec: ModelSpec) -> nn.Module:
    """Build the model of a :class:`LandscapeConfig` ``model`` spec (name, MLP config dict,
    callable)."""
    from ...models import build_mlp, model_from_name

    if isinstance(spec, str):
        return model_from_name(spec)
    if isinstance(spec, Mapping):
        return build_mlp(dict(spec))
    model = spec()
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"the model callable returned {type(model).__name__}, expected a torch.nn.Module"
        )
    return model


@dataclass(frozen=True, eq=False)
class LandscapeRun:
    """What :func:`run_landscape` computed and wrote."""

    result: LandscapeResult
    summary: dict[str, Any]
    files: tuple[Path, ...]
    seconds: float


def _subset_index(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of ``Split.subset(n, seed)`` (the same stratified draw)."""
    from ...data import stratified_split

    return (
        torch.arange(len(labels))
        if n >= len(labels)
        else stratified_split(labels, len(labels) - n, seed)[0]
    )


def run_landscape(
    out_dir: str | os.PathLike[str],
    config: LandscapeConfig | None = None,
    *,
    data: Split | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> LandscapeRun:
    """The landscape stage: train, record the trajectory, evaluate the plane, write files.

    Args:
        out_dir: stage directory (e.g. ``runs/NAME/landscape``); the only place files are written.
        config: :class:`LandscapeConfig` (defaults when None); the pipeline passes the tuned
            model spec and ``TrainConfig`` here.
        data: the training ``Split`` to draw from (default: ``load_train(data_dir)``, all 60,000).
        data_dir: Fashion-MNIST folder for :func:`fashionlab.data.load_train`.
        device: where to train and evaluate.
        progress: tqdm bars.

    Returns:
        :class:`LandscapeRun` (the result, the landscape.json summary, the files written).

    Raises:
        ConfigError: a run diverged, or any setting refused by the library functions.
    """
    config = config or LandscapeConfig()
    out, device = Path(out_dir), resolve_device(device)
    with torch_threads(config.threads), Stopwatch() as total:
        full, train_split, eval_index = _splits(config, data, data_dir)
        X, y = full.take(eval_index).tensors(device)
        with Stopwatch() as train_watch:
            models, logs, trajectory = _train_runs(config, train_split, device, progress)
        files = [trajectory.save(out / TRAJECTORY_FILE)]
        result, own = _surfaces(config, models[0], trajectory, (X, y), device, progress)
        with Stopwatch() as spike_watch:
            spikes = _explain_spikes(config, train_split, result, logs, device)
        files.append(save_surface_npz(out / SURFACE_FILE, result, eval_indices=eval_index.numpy()))
        basins = _basin_checks(result, config.basin_tol)
        with Stopwatch() as plot_watch:
            own_basin, figure_files = _plots(config, out, result, own, basins, models[0])
        files += figure_files
    seconds = {
        "total": total.seconds,
        "train": train_watch.seconds,
        "grid": result.grid_seconds,
        "spike_replay": spike_watch.seconds,
        "plots": plot_watch.seconds,
    }
    summary = _summary(
        config,
        result,
        models[0],
        len(train_split),
        device,
        seconds,
        logs,
        spikes,
        basins,
        own_plane=_own_plane(own, own_basin) if own is not result else None,
    )
    files.append(atomic_write_json(out / SUMMARY_FILE, summary))
    logger.info(
        "landscape: %d snapshots, explained variance %.1f%% + %.1f%%, %dx%d grid at %.0f points/s; "
        "wrote %s in %.1f s",
        len(trajectory),
        *(100 * result.plane.explained_variance_ratio),
        len(result.a),
        len(result.b),
        result.points_per_second,
        out,
        total.seconds,
    )
    return LandscapeRun(result, summary, tuple(files), total.seconds)


def _splits(
    config: LandscapeConfig, data: Split | None, data_dir: str | os.PathLike[str] | None
) -> tuple[Split, Split, torch.Tensor]:
    """The full training split, the part the runs train on, and the evaluation indices."""
    from ...data import load_train

    full = data if data is not None else load_train(data_dir)
    train_split = (
        full if config.subset is None else full.subset(config.subset, seed=config.data_seed)
    )
    eval_index = _subset_index(full.labels, config.eval_examples, config.data_seed)
    return full, train_split, eval_index


def _train_runs(
    config: LandscapeConfig, train_split: Split, device: torch.device, progress: bool
) -> tuple[list[nn.Module], list[RunLog], Trajectory]:
    """Train the ``runs`` models in order (run r initialised from seed + r); their joint path."""
    parts, models, logs = [], [], []
    for r in range(config.runs):
        seed_everything(config.seed + r)  # run r's initialisation
        model = build_landscape_model(config.model)
        part, log = train_run(model, train_split, config, run=r, device=device, progress=progress)
        if log.diverged:
            raise ConfigError(
                f"landscape run {r} diverged after {log.step[-1]} steps "
                f"(lr={config.train.lr}); lower the learning rate"
            )
        parts.append(part)
        models.append(model)
        logs.append(log)
    return models, logs, Trajectory.concat(parts)


def _surfaces(
    config: LandscapeConfig,
    model: nn.Module,
    trajectory: Trajectory,
    examples: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    progress: bool,
) -> tuple[LandscapeResult, LandscapeResult]:
    """The joint plane of all runs, and run 0 in its own plane (the same object for one run)."""

    def surface(path: Trajectory) -> LandscapeResult:
        return loss_landscape(
            model,
            path,
            *examples,
            resolution=config.resolution,
            margin=config.margin,
            margin_growths=config.margin_growths,
            memory_budget_mb=config.memory_budget_mb,
            device=device,
            progress=progress,
        )

    result = surface(trajectory)
    # The main figure: run 0 in its own PCA plane (directions from its theta_i - theta_final),
    # where its path is not squeezed by the line between the runs' final models.
    own = surface(trajectory.select(0)) if config.runs > 1 else result
    return result, own


def _explain_spikes(
    config: LandscapeConfig,
    train_split: Split,
    result: LandscapeResult,
    logs: list[RunLog],
    device: torch.device,
) -> list[dict[str, Any] | None]:
    """:func:`.training.explain_spike` for every run's path."""
    trajectory = result.trajectory
    return [
        explain_spike(
            build_landscape_model(config.model),
            train_split,
            config,
            trajectory.select(r),
            result.trajectory_loss[trajectory.run == r],
            logs[r],
            device=device,
        )
        for r in range(config.runs)
    ]


def _plots(
    config: LandscapeConfig,
    out: Path,
    result: LandscapeResult,
    own: LandscapeResult,
    basins: list[dict[str, Any]],
    model: nn.Module,
) -> tuple[dict[str, Any], list[Path]]:
    """The main figure (run 0's own plane), the joint plane's contours, the HTML page; returns
    run 0's basin check in its own plane and the files."""
    from .plots import plot_landscape, write_landscape_html

    name = getattr(model, "name", type(model).__name__)
    title = f"Loss landscape of {name} along the top-2 PCA directions of the SGD trajectory"
    minima = [tuple(check["surface_min_coords"]) for check in basins]
    own_basin = _basin_checks(own, config.basin_tol)[0]
    files = plot_landscape(
        own, out / FIGURE_STEM, basin_minima=[tuple(own_basin["surface_min_coords"])]
    )
    if own is not result:
        files += plot_landscape(result, out / TWO_RUNS_STEM, basin_minima=minima, contour_only=True)
    files.append(write_landscape_html(result, out / HTML_FILE, title=title))
    return own_basin, files


def _summary(
    config: LandscapeConfig,
    result: LandscapeResult,
    model: nn.Module,
    train_examples: int,
    device: torch.device,
    seconds: dict[str, float],
    logs: list[RunLog],
    spikes: list[dict[str, Any] | None],
    basins: list[dict[str, Any]],
    *,
    own_plane: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``landscape.json`` document (``docs/run-directory.md``)."""
    from .plots import FIGURE_SIZE  # matplotlib: loaded only when the stage runs

    trajectory, plane = result.trajectory, result.plane
    runs = trajectory.runs()
    first = [int(np.flatnonzero(trajectory.run == r)[0]) for r in runs]
    finals = [trajectory.final_index(r) for r in runs]
    run_rows = _run_rows(config, result, first, logs, spikes, basins)
    files = {
        "trajectory": TRAJECTORY_FILE,
        "surface": SURFACE_FILE,
        "png": f"{FIGURE_STEM}.png",
        "pdf": f"{FIGURE_STEM}.pdf",
        "html": HTML_FILE,
    }
    if own_plane is not None:
        files |= {"two_runs_png": f"{TWO_RUNS_STEM}.png", "two_runs_pdf": f"{TWO_RUNS_STEM}.pdf"}
    return {
        "schema_version": 2,
        "model": getattr(model, "name", model_label(config.model)),
        "model_config": getattr(model, "config", None),
        "n_params": trajectory.n_params,
        "config": config.to_dict(),
        "device": str(device),
        "runs": len(runs),
        "n_snapshots": len(trajectory),
        "snapshots_per_run": [int((trajectory.run == r).sum()) for r in runs],
        "train_examples": train_examples,
        "eval_examples": result.n_examples,
        "construction": plane.construction,
        "construction_text": plane.description,
        "explained_variance_ratio": plane.explained_variance_ratio.tolist(),
        "explained_variance_ratio_sum": float(plane.explained_variance_ratio.sum()),
        "grid": {
            "resolution": len(result.a),
            "margin": config.margin,
            "margins": list(result.margin),
            "margin_growths": result.margin_growths,
            "points": result.n_points,
            "a_min": float(result.a[0]),
            "a_max": float(result.a[-1]),
            "b_min": float(result.b[0]),
            "b_max": float(result.b[-1]),
        },
        "final_loss": float(result.trajectory_loss[finals[0]]),
        "final_losses": [float(result.trajectory_loss[i]) for i in finals],
        "initial_losses": [float(result.trajectory_loss[i]) for i in first],
        "centre_loss": result.centre_loss,
        "loss_min": float(np.nanmin(result.loss)),
        "loss_max": float(np.nanmax(result.loss)),
        "max_residual": float(plane.residual.max()),
        "final_residuals": [float(plane.residual[i]) for i in finals],
        "pc1_final_alignment": _final_alignment(trajectory, plane, finals),
        "per_run": run_rows,
        "in_basin": all(row["in_basin"] for row in run_rows),
        "input_layer": result.input_layer,
        "points_per_chunk": result.points_per_chunk,
        "examples_per_chunk": result.examples_per_chunk,
        "grid_points_per_second": result.points_per_second,
        "seconds": seconds,
        "files": files,
        "figure_size_in": list(FIGURE_SIZE),
        "own_plane": own_plane,
    }


def _run_rows(
    config: LandscapeConfig,
    result: LandscapeResult,
    first: list[int],
    logs: list[RunLog],
    spikes: list[dict[str, Any] | None],
    basins: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One ``per_run`` entry of landscape.json per run."""
    return [
        {
            "run": r,
            "init_seed": config.seed + r,
            "epochs": log.epochs,
            "steps": int(log.step[-1]),
            "stop_reason": log.stop_reason,
            "epoch_loss": log.epoch_loss.tolist(),
            "epoch_lr": log.epoch_lr.tolist(),
            "initial_loss": float(result.trajectory_loss[start]),
            **basin,
            "spike": spike,
        }
        for r, start, log, spike, basin in zip(
            result.trajectory.runs(), first, logs, spikes, basins, strict=True
        )
    ]


def _own_plane(own: LandscapeResult, basin: dict[str, Any]) -> dict[str, Any]:
    """Run 0 in its own PCA plane (the main figure): the plane, its grid and its basin check."""
    final = own.trajectory.final_index(own.trajectory.runs()[0])
    return {
        "run": 0,
        "n_snapshots": len(own.trajectory),
        "explained_variance_ratio": own.plane.explained_variance_ratio.tolist(),
        "grid": {
            "resolution": len(own.a),
            "margins": list(own.margin),
            "margin_growths": own.margin_growths,
            "a_min": float(own.a[0]),
            "a_max": float(own.a[-1]),
            "b_min": float(own.b[0]),
            "b_max": float(own.b[-1]),
        },
        "final_loss": float(own.trajectory_loss[final]),
        "final_residual": float(own.plane.residual[final]),
        "loss_min": float(np.nanmin(own.loss)),
        "loss_max": float(np.nanmax(own.loss)),
        "grid_seconds": own.grid_seconds,
        "basin": basin,
    }


def _basin_checks(result: LandscapeResult, tol: float) -> list[dict[str, Any]]:
    """:func:`.basin.basin_check` for every run's final model."""
    trajectory = result.trajectory
    checks = []
    for run in trajectory.runs():
        final = trajectory.final_index(run)
        checks.append(
            basin_check(
                result.loss,
                result.a,
                result.b,
                result.coords[final],
                float(result.trajectory_loss[final]),
                float(result.trajectory_plane_loss[final]),
                tol,
            )
        )
    return checks


def _final_alignment(trajectory: Trajectory, plane: Any, finals: list[int]) -> float | None:
    """|cos| between PC1 and the line through the first two runs' final models (None: one run)."""
    if len(finals) < 2:
        return None
    line = trajectory.params[finals[1]].astype(np.float64) - trajectory.params[finals[0]]
    norm = np.linalg.norm(line)
    return float(abs(line @ plane.directions[0]) / norm) if norm > 0 else None
