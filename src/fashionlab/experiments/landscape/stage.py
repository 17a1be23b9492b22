"""The landscape stage: train with a :class:`TrajectoryRecorder`, evaluate the plane, write
``trajectory.npz``, ``surface.npz``, the figures and ``landscape.json`` (formats in the package docstring).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError
from ...train import TrainConfig, fit
from ...utils import Stopwatch, atomic_write_json, resolve_device, seed_everything, torch_threads
from ...validation import ALL
from .evaluate import LandscapeResult, loss_landscape, save_surface_npz
from .plane import grid_axes
from .trajectory import Trajectory, TrajectoryRecorder

if TYPE_CHECKING:
    from ...data import Split

__all__ = ["LandscapeConfig", "LandscapeRun", "build_landscape_model", "run_landscape"]

logger = logging.getLogger(__name__)

TRAJECTORY_FILE, SURFACE_FILE, SUMMARY_FILE = "trajectory.npz", "surface.npz", "landscape.json"
FIGURE_STEM, HTML_FILE = "landscape", "landscape.html"


ModelSpec = str | Mapping[str, Any] | Callable[[], nn.Module]


@dataclass(frozen=True)
class LandscapeConfig:
    """Settings of the landscape stage (defaults: well under a minute on 2 CPU cores).

    ``model``: a registry name (``mlp_4x50``), an MLP config dict, or a zero-argument callable
    returning a module. ``subset``: training examples (None = the full 60,000); ``eval_examples``:
    the fixed, seeded subset the heights are measured on (the same examples as the training
    subset when both are 2,500, both drawn with ``data_seed``). Run r is initialised with seed
    ``seed + r``; all runs see the same minibatch order (``train.seed``). ``threads``: torch CPU
    threads during the stage (None: leave torch's setting; 1 is faster on a crowded machine).
    """

    model: ModelSpec = field(default="mlp_4x50", hash=False)
    # Batch 50 divides the 2,500 examples: fit keeps a last, smaller batch (2,500 = 39 x 64 + 4), and
    # a step on 4 examples spikes the loss at every epoch end.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15, batch_size=50, lr=0.05))
    subset: int | None = field(default=2500, metadata=ALL)
    eval_examples: int = 2500
    snapshots_per_epoch: float = 5.0
    resolution: int = 31
    margin: float = 0.25
    runs: int = 1
    memory_budget_mb: float = 128.0
    seed: int = 0
    data_seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, (str, Mapping)) and not callable(self.model):
            raise ConfigError(f"model must be a registry name (e.g. mlp_4x50), an MLP config dict or a callable, "
                              f"got {self.model!r}")
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        for name, low in (("eval_examples", 1), ("runs", 1), ("seed", 0), ("data_seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"LandscapeConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be None or an integer >= 1, got {self.threads!r}")
        if self.runs > 4:
            raise ConfigError(f"runs must be between 1 and 4 (one figure, distinguishable paths), got {self.runs}")
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < self.train.batch_size):
            raise ConfigError(f"subset must be None (full training set) or an integer >= the batch size "
                              f"{self.train.batch_size}, got {self.subset!r}")
        TrajectoryRecorder(self.snapshots_per_epoch)  # validates
        grid_axes(np.zeros((1, 2)), self.resolution, self.margin)  # validates
        if not (isinstance(self.memory_budget_mb, (int, float)) and self.memory_budget_mb > 0):
            raise ConfigError(f"memory_budget_mb must be a number > 0, got {self.memory_budget_mb!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> LandscapeConfig:
        """A smoke-test setting: 3 epochs, an 11 x 11 grid (seconds)."""
        settings: dict[str, Any] = {"train": TrainConfig(epochs=3, batch_size=50, lr=0.05), "resolution": 11}
        return cls(**{**settings, **overrides})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["train"] = self.train.to_dict()
        out["model"] = _model_label(self.model)
        return out


def _model_label(spec: ModelSpec) -> Any:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return dict(spec)
    return getattr(spec, "__qualname__", repr(spec))


def build_landscape_model(spec: ModelSpec) -> nn.Module:
    """Build the model of a :class:`LandscapeConfig` ``model`` spec (name, MLP config dict, callable)."""
    from ...models import build_mlp, model_from_name

    if isinstance(spec, str):
        return model_from_name(spec)
    if isinstance(spec, Mapping):
        return build_mlp(dict(spec))
    model = spec()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model callable returned {type(model).__name__}, expected a torch.nn.Module")
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

    return torch.arange(len(labels)) if n >= len(labels) else stratified_split(labels, len(labels) - n, seed)[0]


def run_landscape(out_dir: str | os.PathLike[str], config: LandscapeConfig | None = None, *, data: Split | None = None,
                  data_dir: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
                  progress: bool = True) -> LandscapeRun:
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
    from ...data import load_train
    from .plots import plot_landscape, write_landscape_html

    config = config or LandscapeConfig()
    out, device = Path(out_dir), resolve_device(device)
    with torch_threads(config.threads), Stopwatch() as total:
        full = data if data is not None else load_train(data_dir)
        train_split = full if config.subset is None else full.subset(config.subset, seed=config.data_seed)
        eval_index = _subset_index(full.labels, config.eval_examples, config.data_seed)
        X, y = full.take(eval_index).tensors(device)
        parts, models = [], []
        with Stopwatch() as train_watch:
            for r in range(config.runs):
                seed_everything(config.seed + r)  # run r's initialisation
                model = build_landscape_model(config.model)
                recorder = TrajectoryRecorder(config.snapshots_per_epoch, run=r)
                fitted = fit(model, train_split, config.train, device=device, on_step=recorder, progress=progress)
                if fitted.diverged:
                    raise ConfigError(f"landscape run {r} diverged after {fitted.steps} steps (lr={config.train.lr}); "
                                      f"lower the learning rate")
                recorder.finish(model)
                parts.append(recorder.trajectory())
                models.append(model)
        trajectory = Trajectory.concat(parts)
        files = [trajectory.save(out / TRAJECTORY_FILE)]
        result = loss_landscape(models[0], trajectory, X, y, resolution=config.resolution, margin=config.margin,
                                memory_budget_mb=config.memory_budget_mb, device=device, progress=progress)
        files.append(save_surface_npz(out / SURFACE_FILE, result, eval_indices=eval_index.numpy()))
        name = getattr(models[0], "name", type(models[0]).__name__)
        title = f"Loss landscape of {name} along the top-2 PCA directions of the SGD trajectory"
        with Stopwatch() as plot_watch:
            files += plot_landscape(result, out / FIGURE_STEM, title=title)
            files.append(write_landscape_html(result, out / HTML_FILE, title=title))
    summary = _summary(config, result, models[0], len(train_split), device,
                       {"total": total.seconds, "train": train_watch.seconds, "grid": result.grid_seconds,
                        "plots": plot_watch.seconds})
    files.append(atomic_write_json(out / SUMMARY_FILE, summary))
    logger.info("landscape: %d snapshots, explained variance %.1f%% + %.1f%%, %dx%d grid at %.0f points/s; "
                "wrote %s in %.1f s", len(trajectory), *(100 * result.plane.explained_variance_ratio),
                len(result.a), len(result.b), result.points_per_second, out, total.seconds)
    return LandscapeRun(result, summary, tuple(files), total.seconds)


def _summary(config: LandscapeConfig, result: LandscapeResult, model: nn.Module, train_examples: int,
             device: torch.device, seconds: dict[str, float]) -> dict[str, Any]:
    """The ``landscape.json`` document (schema in the module docstring)."""
    trajectory, plane = result.trajectory, result.plane
    runs = trajectory.runs()
    first = [int(np.flatnonzero(trajectory.run == r)[0]) for r in runs]
    finals = [trajectory.final_index(r) for r in runs]
    return {
        "schema_version": 1,
        "model": getattr(model, "name", _model_label(config.model)),
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
        "grid": {"resolution": len(result.a), "margin": config.margin, "points": result.n_points,
                 "a_min": float(result.a[0]), "a_max": float(result.a[-1]),
                 "b_min": float(result.b[0]), "b_max": float(result.b[-1])},
        "final_loss": float(result.trajectory_loss[finals[0]]),
        "final_losses": [float(result.trajectory_loss[i]) for i in finals],
        "initial_losses": [float(result.trajectory_loss[i]) for i in first],
        "centre_loss": result.centre_loss,
        "loss_min": float(np.nanmin(result.loss)),
        "loss_max": float(np.nanmax(result.loss)),
        "max_residual": float(plane.residual.max()),
        "input_layer": result.input_layer,
        "points_per_chunk": result.points_per_chunk,
        "examples_per_chunk": result.examples_per_chunk,
        "grid_points_per_second": result.points_per_second,
        "seconds": seconds,
        "files": {"trajectory": TRAJECTORY_FILE, "surface": SURFACE_FILE, "png": f"{FIGURE_STEM}.png",
                  "pdf": f"{FIGURE_STEM}.pdf", "html": HTML_FILE},
    }
