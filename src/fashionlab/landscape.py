"""Loss landscape along the top-2 PCA directions of the SGD trajectory (Li et al. 2018, sec. 7).

During :func:`fashionlab.train.fit` a :class:`TrajectoryRecorder` keeps flattened parameter
snapshots theta_i (about 5 per epoch, always the initial and the final parameters). PCA on
theta_i - theta_final (sklearn ``PCA(n_components=2)``, which centres the rows first) gives two
orthonormal directions d1, d2; the final model sits at the origin and each snapshot's coordinates
are the exact projections ``(theta_i - theta_final) . d_j``. The loss surface
``f_CE(theta_final + a d1 + b d2)`` is evaluated on a grid chosen from the projected path plus a
margin, many grid points per forward pass (``torch.func.functional_call`` + ``vmap``), in chunks
sized from a memory budget, with BatchNorm in eval mode and dropout off.

Flattening order: ``torch.nn.utils.parameters_to_vector(model.parameters())`` (registration
order, shared parameters once; names and shapes are saved). Buffers (BatchNorm running stats)
are not directions of the plane: each snapshot keeps its own floating buffers, used for its own
loss; every grid point uses the buffers of the final model passed to :func:`loss_landscape`.

Speed: when the module's first parameterised layer is a ``Linear``/``Conv`` applied to the raw
input, its output is linear in its (weight, bias), so on the plane it is ``z0 + a z1 + b z2``
with three products computed once (float64); the rest of the network runs batched as usual.

Several runs (``runs > 1``): one plane cannot hold every endpoint. The construction is a *joint
PCA*: the origin c is the mean of the runs' final parameters and the directions are the top-2
principal components of all snapshots of all runs (theta_i - c); it is written on the figures.

Outputs of :func:`run_landscape` (the stage directory, e.g. ``runs/NAME/landscape/``):

``trajectory.npz`` (:meth:`Trajectory.save`)::

    params (K, P) snapshots in flattening order; step (K,) SGD step (0 = initial);
    epoch_fraction (K,); train_loss (K,) minibatch f_CE at that step (NaN at step 0);
    run (K,) run index; buffers (K, B) floating buffers, flattened; param_names, param_shapes
    ("50,784"), buffer_names, buffer_shapes: the flattening order.

``surface.npz`` (:func:`save_surface_npz`)::

    d1, d2 (P,) float64 unit directions; centre (P,) float64 origin of the plane (theta_final, or
    the mean of the finals for joint PCA); a (Ra,), b (Rb,) grid coordinates; loss (Rb, Ra) with
    loss[k, l] = f_CE(centre + a[l] d1 + b[k] d2) (np.meshgrid(a, b) order); trajectory_coords
    (K, 2); trajectory_loss (K,) each snapshot's own f_CE (its parameters and buffers, eval mode,
    same examples); trajectory_plane_loss (K,) f_CE at its projection onto the plane;
    trajectory_residual (K,) ||theta_i - c - projection|| / ||theta_i - c||; trajectory_run,
    trajectory_step, trajectory_epoch_fraction (K,); explained_variance_ratio (2,),
    explained_variance (2,); centre_loss (); buffers (B,) and buffer_names/buffer_shapes used on
    the grid; param_names, param_shapes; construction ("pca" | "joint-pca"); n_examples ();
    eval_indices (N,) indices into the training images (file order) of the loss examples.

``landscape.json`` (read by the report), schema_version 1::

    model, model_config, n_params, config (LandscapeConfig incl. train), device, runs,
    n_snapshots, snapshots_per_run, train_examples, eval_examples, construction,
    construction_text, explained_variance_ratio [pc1, pc2], explained_variance_ratio_sum,
    grid {resolution, margin, points, a_min, a_max, b_min, b_max}, final_loss (run 0),
    final_losses, initial_losses (per run), centre_loss, loss_min, loss_max (grid),
    max_residual, input_layer, points_per_chunk, examples_per_chunk, grid_points_per_second,
    seconds {total, train, grid, plots}, files {trajectory, surface, png, pdf, html}

and ``landscape.png`` / ``landscape.pdf`` (3-D surface + contour panel) and ``landscape.html``
(self-contained interactive Plotly view, works offline).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .train import TrainConfig, fit
from .utils import Stopwatch, atomic_save_npz, atomic_write_json, resolve_device, seed_everything

__all__ = [
    "Trajectory", "TrajectoryRecorder", "PCAPlane", "pca_plane", "grid_axes", "check_trajectory",
    "evaluate_points", "plane_losses", "LandscapeResult", "loss_landscape", "save_surface_npz",
    "LandscapeConfig", "LandscapeRun", "build_landscape_model", "run_landscape",
]

logger = logging.getLogger(__name__)

TRAJECTORY_FILE, SURFACE_FILE, SUMMARY_FILE = "trajectory.npz", "surface.npz", "landscape.json"
FIGURE_STEM, HTML_FILE = "landscape", "landscape.html"
# Layers whose output is linear in (weight, bias) jointly: factorised when they read the raw input.
_PARAM_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# --- trajectory -------------------------------------------------------------------------------------

def _shape_str(shape: tuple[int, ...]) -> str:
    return ",".join(map(str, shape))


def _float_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Parameter snapshots of one or more training runs (rows in time order within each run)."""

    params: np.ndarray  # (K, P)
    step: np.ndarray  # (K,)
    epoch_fraction: np.ndarray  # (K,)
    train_loss: np.ndarray  # (K,) minibatch f_CE, NaN at step 0
    run: np.ndarray  # (K,)
    buffers: np.ndarray | None = None  # (K, B)
    param_names: tuple[str, ...] = ()
    param_shapes: tuple[tuple[int, ...], ...] = ()
    buffer_names: tuple[str, ...] = ()
    buffer_shapes: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        params = np.asarray(self.params)
        if params.ndim != 2 or params.shape[0] == 0:
            raise ConfigError(f"trajectory params must be a (snapshots, parameters) matrix, got shape {params.shape}")
        k = params.shape[0]
        buffers = np.zeros((k, 0), params.dtype) if self.buffers is None else np.asarray(self.buffers)
        columns = {"step": (self.step, np.int64), "epoch_fraction": (self.epoch_fraction, np.float64),
                   "train_loss": (self.train_loss, np.float64), "run": (self.run, np.int64)}
        for name, (values, dtype) in columns.items():
            values = np.asarray(values, dtype=dtype)
            if values.shape != (k,):
                raise ConfigError(f"trajectory {name} has shape {values.shape}, expected ({k},) like params")
            object.__setattr__(self, name, values)
        if buffers.ndim != 2 or buffers.shape[0] != k:
            raise ConfigError(f"trajectory buffers have shape {buffers.shape}, expected ({k}, B)")
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "buffers", buffers)
        for key in ("param_names", "buffer_names"):
            object.__setattr__(self, key, tuple(str(n) for n in getattr(self, key)))
        for key in ("param_shapes", "buffer_shapes"):
            object.__setattr__(self, key, tuple(tuple(int(d) for d in s) for s in getattr(self, key)))

    def __len__(self) -> int:
        return int(self.params.shape[0])

    @property
    def n_params(self) -> int:
        return int(self.params.shape[1])

    def runs(self) -> list[int]:
        """Run indices in order of first appearance."""
        return list(dict.fromkeys(self.run.tolist()))

    def final_index(self, run: int) -> int:
        """Row of the final snapshot (largest step) of ``run``."""
        rows = np.flatnonzero(self.run == run)
        if not len(rows):
            raise ConfigError(f"run {run} has no snapshots; runs present: {self.runs()}")
        return int(rows[len(rows) - 1 - np.argmax(self.step[rows][::-1])])  # the last of equal steps

    def select(self, run: int) -> Trajectory:
        """The snapshots of one run."""
        keep = self.run == run
        return dataclasses.replace(self, params=self.params[keep], step=self.step[keep],
                                   epoch_fraction=self.epoch_fraction[keep], train_loss=self.train_loss[keep],
                                   run=self.run[keep], buffers=self.buffers[keep])

    @staticmethod
    def concat(parts: list[Trajectory]) -> Trajectory:
        """Stack runs; part i gets run index i."""
        if not parts:
            raise ConfigError("no trajectories to combine")
        cat = lambda key: np.concatenate([getattr(p, key) for p in parts])  # noqa: E731
        return dataclasses.replace(parts[0], params=cat("params"), step=cat("step"), epoch_fraction=cat("epoch_fraction"),
                                   train_loss=cat("train_loss"), buffers=cat("buffers"),
                                   run=np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)]))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``trajectory.npz`` (keys in the module docstring), atomically."""
        return atomic_save_npz(
            path, params=self.params, step=self.step, epoch_fraction=self.epoch_fraction, train_loss=self.train_loss,
            run=self.run, buffers=self.buffers, param_names=np.array(self.param_names, dtype=str),
            param_shapes=np.array([_shape_str(s) for s in self.param_shapes], dtype=str),
            buffer_names=np.array(self.buffer_names, dtype=str),
            buffer_shapes=np.array([_shape_str(s) for s in self.buffer_shapes], dtype=str))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trajectory:
        """Read a file written by :meth:`save`; raises ConfigError if it is missing or not one."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {key: f[key] for key in f.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read trajectory {path} ({exc}); expected a trajectory.npz from "
                              f"`fashionlab landscape`") from exc
        missing = {"params", "step", "epoch_fraction", "train_loss", "run"} - set(arrays)
        if missing:
            raise ConfigError(f"{path} is not a trajectory file: keys {sorted(missing)} are missing")
        shapes = lambda key: tuple(tuple(int(d) for d in s.split(",") if d) for s in arrays.get(key, []))  # noqa: E731
        return cls(arrays["params"], arrays["step"], arrays["epoch_fraction"], arrays["train_loss"], arrays["run"],
                   arrays.get("buffers"), tuple(arrays.get("param_names", ())), shapes("param_shapes"),
                   tuple(arrays.get("buffer_names", ())), shapes("buffer_shapes"))


class TrajectoryRecorder:
    """``on_step`` hook for :func:`fashionlab.train.fit` (or any loop) that keeps parameter snapshots.

    A snapshot is taken at step 0, whenever ``epoch_fraction`` crosses a multiple of
    ``1 / snapshots_per_epoch``, and by :meth:`finish` after training (the final parameters).

    Args:
        snapshots_per_epoch: snapshots per epoch (> 0; every step if an epoch has fewer steps).
        run: run index written into the trajectory.
        keep_buffers: also keep each snapshot's floating buffers (BatchNorm running stats).
    """

    def __init__(self, snapshots_per_epoch: float = 5.0, *, run: int = 0, keep_buffers: bool = True) -> None:
        if not (isinstance(snapshots_per_epoch, (int, float)) and math.isfinite(snapshots_per_epoch)
                and snapshots_per_epoch > 0):
            raise ConfigError(f"snapshots_per_epoch must be a number > 0, got {snapshots_per_epoch!r}")
        self.snapshots_per_epoch, self.run, self.keep_buffers = float(snapshots_per_epoch), run, keep_buffers
        self._rows: list[tuple[int, float, float, torch.Tensor, torch.Tensor]] = []
        self._last: tuple[int, float, float] | None = None
        self._slot = -1
        self._layout: tuple[Any, ...] = ((), (), (), ())

    def __call__(self, step: int, epoch_fraction: float, model: nn.Module, loss: float) -> None:
        slot = math.floor(epoch_fraction * self.snapshots_per_epoch + 1e-9)
        if not self._rows or step == 0 or slot > self._slot:
            self._record(step, epoch_fraction, model, loss)
        self._slot, self._last = slot, (step, epoch_fraction, loss)

    def _record(self, step: int, epoch_fraction: float, model: nn.Module, loss: float) -> None:
        with torch.no_grad():
            flat = nn.utils.parameters_to_vector([p.detach() for p in model.parameters()]).cpu().clone()
            buffers = _float_buffers(model) if self.keep_buffers else []
            flat_buffers = (torch.cat([b.detach().reshape(-1).cpu() for _, b in buffers]) if buffers
                            else torch.zeros(0, dtype=flat.dtype))
        if not self._rows:
            named = list(model.named_parameters())
            self._layout = (tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named),
                            tuple(n for n, _ in buffers), tuple(tuple(b.shape) for _, b in buffers))
        self._rows.append((step, epoch_fraction, loss, flat, flat_buffers))

    def finish(self, model: nn.Module) -> None:
        """Record the final parameters (after the last step) unless that step is already recorded."""
        if self._last is None:
            self._record(0, 0.0, model, float("nan"))
        elif self._rows[-1][0] != self._last[0]:
            step, epoch_fraction, loss = self._last
            self._record(step, epoch_fraction, model, loss)

    def trajectory(self) -> Trajectory:
        """The snapshots so far as a :class:`Trajectory`."""
        if not self._rows:
            raise ConfigError("no snapshots recorded: pass the recorder as fit(..., on_step=recorder)")
        steps, fractions, losses, flats, bufs = zip(*self._rows, strict=True)
        return Trajectory(torch.stack(flats).numpy(), np.array(steps), np.array(fractions), np.array(losses),
                          np.full(len(steps), self.run), torch.stack(bufs).numpy(), *self._layout)


def check_trajectory(trajectory: Trajectory, model: nn.Module | None = None) -> None:
    """Refuse trajectories a plane cannot be built from, with the fix in the message.

    Raises:
        ConfigError: NaN/inf in a snapshot, fewer than 3 distinct snapshots, or a parameter /
            buffer layout that does not match ``model``.
    """
    bad = ~np.isfinite(trajectory.params).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        count = int((~np.isfinite(trajectory.params[i])).sum())
        raise ConfigError(f"snapshot {i} (run {trajectory.run[i]}, step {trajectory.step[i]}) has {count} NaN/inf "
                          f"parameters: that training run diverged; lower the learning rate or drop the run")
    distinct = len(np.unique(trajectory.params, axis=0))
    if distinct < 3:
        raise ConfigError(f"the trajectory has only {distinct} distinct snapshot(s); two PCA directions need at "
                          f"least 3: train for more steps or record more snapshots (--snapshots-per-epoch)")
    if model is None:
        return
    n_model = sum(p.numel() for p in model.parameters())
    if n_model != trajectory.n_params:
        raise ConfigError(f"the trajectory's snapshots have {trajectory.n_params} parameters but the model has "
                          f"{n_model}: record the trajectory from the same architecture as the model")
    shapes = tuple(tuple(p.shape) for p in model.parameters())
    if trajectory.param_shapes and trajectory.param_shapes != shapes:
        raise ConfigError(f"the trajectory's parameter shapes {trajectory.param_shapes[:3]}... differ from the "
                          f"model's {shapes[:3]}...: record the trajectory from the same architecture")
    n_buffers = sum(b.numel() for _, b in _float_buffers(model))
    if trajectory.buffers.shape[1] not in (0, n_buffers):
        raise ConfigError(f"the trajectory keeps {trajectory.buffers.shape[1]} buffer values per snapshot but the "
                          f"model has {n_buffers}: record the trajectory from the same architecture")


# --- PCA plane --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PCAPlane:
    """Origin ``centre`` (P,), orthonormal ``directions`` (2, P), and the snapshots' coordinates."""

    centre: np.ndarray
    directions: np.ndarray
    explained_variance_ratio: np.ndarray
    explained_variance: np.ndarray
    coords: np.ndarray  # (K, 2) = (theta_i - centre) @ directions.T
    residual: np.ndarray  # (K,) relative distance of theta_i from the plane
    construction: str  # "pca" | "joint-pca"
    description: str


def pca_plane(trajectory: Trajectory) -> PCAPlane:
    """Top-2 PCA directions of the snapshots relative to the final parameters (Li et al. 2018).

    One run: ``PCA(n_components=2)`` on theta_i - theta_final, origin theta_final. Several runs:
    joint PCA of all snapshots relative to the mean c of the final parameters, origin c. Each
    direction's sign is chosen so that the first run's initial snapshot has coordinates >= 0.

    Raises:
        ConfigError: see :func:`check_trajectory`; or all snapshots lie on one line.
    """
    from sklearn.decomposition import PCA

    check_trajectory(trajectory)
    thetas = trajectory.params.astype(np.float64)
    runs = trajectory.runs()
    centre = thetas[[trajectory.final_index(r) for r in runs]].mean(axis=0)
    centred = thetas - centre  # (K, P); PCA subtracts the row mean itself
    pca = PCA(n_components=2, svd_solver="full").fit(centred)
    directions = np.array(pca.components_, dtype=np.float64)
    if not pca.explained_variance_ratio_[1] > 1e-12:
        raise ConfigError("the snapshots lie on a line (second principal component has no variance): "
                          "record more snapshots or train longer")
    coords = centred @ directions.T
    first = int(np.flatnonzero(trajectory.run == runs[0])[0])
    signs = np.where(coords[first] < 0, -1.0, 1.0)
    directions, coords = directions * signs[:, None], coords * signs
    norms = np.linalg.norm(centred, axis=1)
    off = np.linalg.norm(centred - coords @ directions, axis=1)
    residual = np.divide(off, norms, out=np.zeros_like(norms), where=norms > 0)
    if len(runs) == 1:
        construction, text = "pca", "plane: top-2 PCA directions of θ_i − θ_final (one run); origin = final model"
    else:
        construction = "joint-pca"
        text = (f"plane: joint PCA of all snapshots of {len(runs)} runs (θ_i − c, c = mean of the {len(runs)} "
                f"final models); origin c is no run's endpoint")
    return PCAPlane(centre, directions, np.array(pca.explained_variance_ratio_), np.array(pca.explained_variance_),
                    coords, residual, construction, text)


def grid_axes(coords: np.ndarray, resolution: int = 31, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates (a, b) covering the projected path and the origin, widened by ``margin``.

    ``margin`` is a fraction of the path's extent on each axis (0.25 = a quarter on each side).
    """
    if not isinstance(resolution, int) or isinstance(resolution, bool) or not 2 <= resolution <= 1001:
        raise ConfigError(f"resolution must be an integer between 2 and 1001 grid points per axis, got {resolution!r}")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"margin must be a number >= 0 (fraction of the path's extent), got {margin!r}")
    low, high = np.minimum(coords.min(axis=0), 0.0), np.maximum(coords.max(axis=0), 0.0)
    span = np.where(high > low, high - low, 1.0)
    low, high = low - margin * span, high + margin * span
    return np.linspace(low[0], high[0], resolution), np.linspace(low[1], high[1], resolution)


# --- batched evaluation -----------------------------------------------------------------------------

@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """BatchNorm on running stats, dropout off; every submodule's mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class _PlaneInput(nn.Module):
    """Stands in for a parameter-linear input layer: layer(X; c + a d1 + b d2) = z0 + a z1 + b z2."""

    def __init__(self, z: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("z", z)  # (3, N, ...) from (c, d1, d2)
        self.register_buffer("coords", torch.zeros(2, dtype=z.dtype, device=z.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z[0] + self.coords[0] * self.z[1] + self.coords[1] * self.z[2]


class _Evaluator:
    """f(theta) for many parameter vectors of one module: functional_call + vmap, chunked by memory."""

    def __init__(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, criterion: Callable | None,
                 memory_budget_mb: float, device: str | torch.device) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not (torch.is_tensor(X) and torch.is_tensor(y)) or len(X) != len(y) or len(X) == 0:
            raise ConfigError(f"X and y must be tensors with the same number (>= 1) of examples, got "
                              f"{getattr(X, 'shape', type(X))} and {getattr(y, 'shape', type(y))}")
        if not (isinstance(memory_budget_mb, (int, float)) and math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
            raise ConfigError(f"memory_budget_mb must be a number > 0, got {memory_budget_mb!r}")
        named = list(model.named_parameters())
        if not named or len({p.dtype for _, p in named}) != 1 or not named[0][1].is_floating_point():
            raise ConfigError("the model needs floating-point parameters of one dtype")
        self.model, self.device, self.dtype = model, resolve_device(device), named[0][1].dtype
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.n_params = sum(self.numels)
        self.buffers = {n: b.detach().to(self.device) for n, b in model.named_buffers()}
        self.X = X.to(self.device, self.dtype) if X.is_floating_point() else X.to(self.device)
        self.y, self.n = y.to(self.device), len(X)
        self.criterion = criterion or F.cross_entropy
        self.budget = float(memory_budget_mb) * 2**20
        self.elem = torch.finfo(self.dtype).bits // 8
        with _eval_mode(model):
            self.per_example, self.input_layer, self._input_shape = self._probe()
        self.points_per_chunk, self.examples_per_chunk = self._plan()

    def _probe(self) -> tuple[float, str | None, tuple[int, ...]]:
        """One small forward pass: activation floats per example, and a raw-input Linear/Conv if any."""
        x = self.X[: min(self.n, 16)].contiguous()
        sizes: list[int] = []
        seen: dict[str, list[torch.Tensor]] = {}
        add_out = lambda _m, _a, out: sizes.extend(  # noqa: E731
            t.numel() for t in (out if isinstance(out, (tuple, list)) else (out,)) if torch.is_tensor(t))
        handles = [m.register_forward_hook(add_out) for m in self.model.modules()]
        for name, module in self.model.named_modules():
            if isinstance(module, _PARAM_LINEAR):
                handles.append(module.register_forward_pre_hook(
                    lambda _m, args, name=name: seen.setdefault(name, []).append(args[0] if args else None)))
        params = {n: p.detach().to(self.device) for n, p in self.model.named_parameters()}
        try:
            with torch.no_grad():
                torch.func.functional_call(self.model, (params, self.buffers), (x,))
        finally:
            for handle in handles:
                handle.remove()
        # Without autograd only a few activations are alive at once: 4x the largest one bounds the
        # peak (X itself is shared by all points of a chunk and not counted).
        per_example = 4 * max(sizes, default=1) / len(x)
        for name, inputs in seen.items():
            own = [n for n, _ in self.model.get_submodule(name).named_parameters()]
            if (len(inputs) == 1 and torch.is_tensor(inputs[0]) and inputs[0].data_ptr() == x.data_ptr()
                    and inputs[0].numel() == x.numel() and inputs[0].is_contiguous()
                    and all(f"{name}.{n}" in params for n in own) and set(own) <= {"weight", "bias"}):
                return per_example, name, tuple(inputs[0].shape[1:])
        return per_example, None, ()

    def _plan(self) -> tuple[int, int]:
        """(grid points per chunk, examples per chunk) so that one chunk fits the memory budget."""
        per_point_example = self.per_example * self.elem
        per_point = self.n_params * (self.elem + 8)  # the parameter row and its float64 construction
        points = int(self.budget // (per_point + self.n * per_point_example))
        if points >= 1:
            return points, self.n
        examples = int((self.budget - per_point) // per_point_example)
        if examples < 1:
            need = (per_point + per_point_example) / 2**20
            raise ConfigError(f"memory_budget_mb={self.budget / 2**20:g} is too small for one grid point of this "
                              f"model ({need:.2f} MB); raise memory_budget_mb")
        return 1, examples

    def _vmapped(self, model: nn.Module, names: list[str], extra_buffer: str | None, buffer_layout=None):
        numels, shapes = [self.numels[self.names.index(n)] for n in names], [self.shapes[self.names.index(n)] for n in names]

        def loss(theta: torch.Tensor, extra: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            params = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, numels), shapes, strict=True)}
            buffers = dict(self.buffers)
            if extra_buffer is not None:
                buffers[extra_buffer] = extra
            elif buffer_layout is not None:
                b_names, b_numels, b_shapes = buffer_layout
                buffers.update({n: t.view(s) for n, t, s in zip(b_names, torch.split(extra, b_numels), b_shapes,
                                                                 strict=True)})
            return self.criterion(torch.func.functional_call(model, (params, buffers), (x,)), y)

        return torch.func.vmap(loss, in_dims=(0, 0, None, None))

    def _run(self, fn: Callable, make: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]], count: int,
             progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        out = np.empty(count)
        step, examples = self.points_per_chunk, self.examples_per_chunk
        with torch.no_grad(), _eval_mode(self.model), tqdm(total=count, disable=not progress, unit="pt",
                                                           leave=False, desc="landscape") as bar:
            for lo in range(0, count, step):
                hi = min(count, lo + step)
                theta, extra = make(lo, hi)
                if examples >= self.n:
                    values = fn(theta, extra, self.X, self.y)
                else:  # mean over the examples from per-chunk means, weighted by chunk size
                    values = sum(fn(theta, extra, self.X[s:s + examples], self.y[s:s + examples])
                                 * len(self.y[s:s + examples]) for s in range(0, self.n, examples)) / self.n
                out[lo:hi] = values.double().cpu().numpy()
                bar.update(hi - lo)
        return out

    def points(self, thetas: np.ndarray, buffers: np.ndarray | None, buffer_layout=None,
               progress: bool = False) -> np.ndarray:
        """Loss at each row of ``thetas`` (K, P), with per-row floating ``buffers`` (K, B) if given."""
        thetas_t = torch.as_tensor(thetas)
        use_buffers = buffers is not None and buffers.shape[1] > 0
        buffers_t = torch.as_tensor(buffers) if use_buffers else torch.zeros(len(thetas), 1)
        fn = self._vmapped(self.model, self.names, None, buffer_layout if use_buffers else None)
        make = lambda lo, hi: (thetas_t[lo:hi].to(self.device, self.dtype),  # noqa: E731
                               buffers_t[lo:hi].to(self.device, self.dtype))
        return self._run(fn, make, len(thetas), progress)

    def plane(self, centre: np.ndarray, directions: np.ndarray, coords: np.ndarray, *, factor_input_layer: bool = True,
              progress: bool = False) -> np.ndarray:
        """Loss at ``centre + coords @ directions`` for each row of ``coords`` (M, 2)."""
        # float64 keeps centre + a d1 + b d2 exact to float32 rounding (no float64 on Apple MPS).
        wide = torch.float32 if self.device.type == "mps" else torch.float64
        c = torch.as_tensor(centre, dtype=wide, device=self.device)
        d = torch.as_tensor(directions, dtype=wide, device=self.device)
        coords_t = torch.as_tensor(np.asarray(coords), dtype=wide, device=self.device)
        model, names, extra = self.model, self.names, None
        z_bytes = 3 * self.n * self.per_example * self.elem  # upper bound of the three products
        if (factor_input_layer and self.input_layer is not None and self.examples_per_chunk >= self.n
                and z_bytes <= self.budget / 2):
            model, names, extra = self._factorised(c, d, wide)
        keep = [self.names.index(n) for n in names]
        index = torch.cat([torch.arange(sum(self.numels[:i]), sum(self.numels[:i + 1])) for i in keep]).to(self.device)
        c_kept, d_kept = c[index], d[:, index]
        fn = self._vmapped(model, names, extra)
        make = lambda lo, hi: ((c_kept + coords_t[lo:hi] @ d_kept).to(self.dtype),  # noqa: E731
                               coords_t[lo:hi].to(self.dtype))
        return self._run(fn, make, len(coords_t), progress)

    def _factorised(self, c: torch.Tensor, d: torch.Tensor, wide: torch.dtype) -> tuple[nn.Module, list[str], str]:
        """A copy of the model whose raw-input layer is replaced by z0 + a z1 + b z2 (precomputed)."""
        name = self.input_layer
        layer = self.model.get_submodule(name)
        own = [n for n, _ in layer.named_parameters()]
        x = self.X.reshape(self.n, *self._input_shape).to(wide)
        offsets = dict(zip(self.names, np.cumsum([0, *self.numels[:-1]]).tolist(), strict=True))
        views = []
        for vector in (c, d[0], d[1]):
            values = {n: vector[offsets[f"{name}.{n}"]:offsets[f"{name}.{n}"] + getattr(layer, n).numel()]
                      .view(getattr(layer, n).shape) for n in own}
            with torch.no_grad():
                views.append(torch.func.functional_call(layer, values, (x,)))
        fast = copy.deepcopy(self.model).eval()
        parent, _, leaf = name.rpartition(".")
        setattr(fast.get_submodule(parent) if parent else fast, leaf, _PlaneInput(torch.stack(views).to(self.dtype)))
        return fast, [n for n in self.names if not n.startswith(f"{name}.")], f"{name}.coords"


def evaluate_points(model: nn.Module, thetas: np.ndarray, X: torch.Tensor, y: torch.Tensor, *,
                    buffers: np.ndarray | None = None, criterion: Callable | None = None,
                    memory_budget_mb: float = 128.0, device: str | torch.device = "cpu") -> np.ndarray:
    """Loss of ``model`` (eval mode) at each flattened parameter vector, batched with vmap.

    Args:
        model: any module; ``thetas`` rows follow ``parameters_to_vector(model.parameters())``.
        thetas: (K, P) parameter vectors.
        X, y: inputs and targets; ``criterion(model(X), y)`` is the mean loss (default cross-entropy).
        buffers: (K, B) floating buffers per row (default: the model's own buffers for every row).
        memory_budget_mb: memory for one chunk of points; chunks are sized from it.
        device: where to evaluate.

    Returns:
        (K,) float64 losses.
    """
    evaluator = _Evaluator(model, X, y, criterion=criterion, memory_budget_mb=memory_budget_mb, device=device)
    layout = ([n for n, _ in _float_buffers(model)], [b.numel() for _, b in _float_buffers(model)],
              [tuple(b.shape) for _, b in _float_buffers(model)])
    return evaluator.points(np.asarray(thetas), buffers, layout)


def plane_losses(model: nn.Module, centre: np.ndarray, directions: np.ndarray, coords: np.ndarray,
                 X: torch.Tensor, y: torch.Tensor, *, criterion: Callable | None = None,
                 memory_budget_mb: float = 128.0, device: str | torch.device = "cpu",
                 factor_input_layer: bool = True, progress: bool = False) -> np.ndarray:
    """Loss at ``centre + a d1 + b d2`` for each row (a, b) of ``coords`` (M, 2); see :func:`loss_landscape`."""
    evaluator = _Evaluator(model, X, y, criterion=criterion, memory_budget_mb=memory_budget_mb, device=device)
    return evaluator.plane(centre, directions, coords, factor_input_layer=factor_input_layer, progress=progress)


# --- the landscape ----------------------------------------------------------------------------------

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

    @property
    def coords(self) -> np.ndarray:
        return self.plane.coords

    @property
    def n_points(self) -> int:
        return int(self.loss.size)

    @property
    def points_per_second(self) -> float:
        return self.n_points / self.grid_seconds if self.grid_seconds > 0 else math.inf


def loss_landscape(model: nn.Module, trajectory: Trajectory, X: torch.Tensor, y: torch.Tensor, *,
                   resolution: int = 31, margin: float = 0.25, memory_budget_mb: float = 128.0,
                   device: str | torch.device = "cpu", criterion: Callable | None = None,
                   factor_input_layer: bool = True, progress: bool = False) -> LandscapeResult:
    """The loss surface on the PCA plane of ``trajectory`` and the real loss of every snapshot.

    Works for any module and any (X, y): ``criterion(model(X), y)`` is the mean loss (default
    cross-entropy, i.e. the unregularised f_CE). BatchNorm runs on running stats, dropout is off;
    the grid uses the buffers of ``model`` (normally the final model of run 0), each snapshot its own.

    Args:
        model: the architecture of the snapshots (its parameters are not used, its buffers are).
        trajectory: snapshots from :class:`TrajectoryRecorder` (one or several runs).
        X, y: the examples the heights are measured on.
        resolution: grid points per axis (>= 2).
        margin: extra range on each side, as a fraction of the path's extent.
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
    a, b = grid_axes(plane.coords, resolution, margin)
    evaluator = _Evaluator(model, X, y, criterion=criterion, memory_budget_mb=memory_budget_mb, device=device)
    mesh = np.stack([g.ravel() for g in np.meshgrid(a, b)], axis=1)  # (Rb * Ra, 2), a varies fastest
    with Stopwatch() as watch:
        grid = evaluator.plane(plane.centre, plane.directions, mesh, factor_input_layer=factor_input_layer,
                               progress=progress)
    extra = evaluator.plane(plane.centre, plane.directions, np.vstack([np.zeros((1, 2)), plane.coords]),
                            factor_input_layer=factor_input_layer)
    floats = _float_buffers(model)
    layout = ([n for n, _ in floats], [t.numel() for _, t in floats], [tuple(t.shape) for _, t in floats])
    own = evaluator.points(trajectory.params, trajectory.buffers, layout)
    used = evaluator.input_layer if factor_input_layer and evaluator.examples_per_chunk >= evaluator.n else None
    if not np.isfinite(grid).all():
        logger.warning("landscape: %d of %d grid losses are not finite", int((~np.isfinite(grid)).sum()), grid.size)
    flat_buffers = (torch.cat([t.detach().reshape(-1).cpu() for _, t in floats]).numpy() if floats
                    else np.zeros(0, np.float32))
    return LandscapeResult(a, b, grid.reshape(len(b), len(a)), plane, trajectory, own, extra[1:], float(extra[0]),
                           evaluator.n, flat_buffers, tuple(layout[0]), tuple(layout[2]), evaluator.points_per_chunk,
                           evaluator.examples_per_chunk, used, watch.seconds)


def save_surface_npz(path: str | os.PathLike[str], result: LandscapeResult, **extra: Any) -> Path:
    """Write ``surface.npz`` (keys in the module docstring) plus any ``extra`` arrays, atomically."""
    plane, trajectory = result.plane, result.trajectory
    return atomic_save_npz(
        path, d1=plane.directions[0], d2=plane.directions[1], centre=plane.centre, a=result.a, b=result.b,
        loss=result.loss, trajectory_coords=plane.coords, trajectory_loss=result.trajectory_loss,
        trajectory_plane_loss=result.trajectory_plane_loss, trajectory_residual=plane.residual,
        trajectory_run=trajectory.run, trajectory_step=trajectory.step,
        trajectory_epoch_fraction=trajectory.epoch_fraction,
        explained_variance_ratio=plane.explained_variance_ratio, explained_variance=plane.explained_variance,
        centre_loss=np.float64(result.centre_loss), buffers=result.buffers,
        buffer_names=np.array(result.buffer_names, dtype=str),
        buffer_shapes=np.array([_shape_str(s) for s in result.buffer_shapes], dtype=str),
        param_names=np.array(trajectory.param_names, dtype=str),
        param_shapes=np.array([_shape_str(s) for s in trajectory.param_shapes], dtype=str),
        construction=np.array(plane.construction), n_examples=np.int64(result.n_examples), **extra)


# --- the stage --------------------------------------------------------------------------------------

ModelSpec = str | Mapping[str, Any] | Callable[[], nn.Module]


@dataclass(frozen=True)
class LandscapeConfig:
    """Settings of the landscape stage (defaults: well under a minute on 2 CPU cores).

    ``model``: a registry name (``mlp_4x50``), an MLP config dict, or a zero-argument callable
    returning a module. ``subset``: training examples (None = the full 60,000); ``eval_examples``:
    the fixed, seeded subset the heights are measured on (the same examples as the training
    subset when both are 2,500, both drawn with ``data_seed``). Run r is initialised with seed
    ``seed + r``; all runs see the same minibatch order (``train.seed``).
    """

    model: ModelSpec = field(default="mlp_4x50", hash=False)
    # Batch 50 divides the 2,500 examples: fit keeps a last, smaller batch (2,500 = 39 x 64 + 4), and
    # a step on 4 examples spikes the loss at every epoch end.
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15, batch_size=50, lr=0.05))
    subset: int | None = 2500
    eval_examples: int = 2500
    snapshots_per_epoch: float = 5.0
    resolution: int = 31
    margin: float = 0.25
    runs: int = 1
    memory_budget_mb: float = 128.0
    seed: int = 0
    data_seed: int = 0

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
    from .models import build_mlp, model_from_name

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
    from .data import stratified_split

    return torch.arange(len(labels)) if n >= len(labels) else stratified_split(labels, len(labels) - n, seed)[0]


def run_landscape(out_dir: str | os.PathLike[str], config: LandscapeConfig | None = None, *, data: Any = None,
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
    from .data import load_train
    from .landscape_plots import plot_landscape, write_landscape_html

    config = config or LandscapeConfig()
    out, device = Path(out_dir), resolve_device(device)
    with Stopwatch() as total:
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
