"""Parameter snapshots of SGD runs: :class:`Trajectory` (``trajectory.npz``), the ``on_step`` hook
:class:`TrajectoryRecorder` that records them, and :func:`check_trajectory`.

Flattening order: ``torch.nn.utils.parameters_to_vector(model.parameters())``; floating buffers
(BatchNorm running stats) are kept per snapshot, flattened in ``model.named_buffers()`` order.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...atomic import atomic_save_npz
from ...errors import ConfigError
from ...validation import is_number

__all__ = ["Trajectory", "TrajectoryRecorder", "check_trajectory"]


def _shape_str(shape: tuple[int, ...]) -> str:
    return ",".join(map(str, shape))


def _float_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]


_Layout = tuple[list[str], list[int], list[tuple[int, ...]]]


def _buffer_layout(model: nn.Module) -> _Layout:
    """(names, sizes, shapes) of the floating buffers, in the order snapshots flatten them."""
    floats = _float_buffers(model)
    return (
        [n for n, _ in floats],
        [b.numel() for _, b in floats],
        [tuple(b.shape) for _, b in floats],
    )


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
            raise ConfigError(
                "trajectory params must be a (snapshots, parameters) matrix, got shape "
                f"{params.shape}"
            )
        k = params.shape[0]
        buffers = (
            np.zeros((k, 0), params.dtype) if self.buffers is None else np.asarray(self.buffers)
        )
        columns = {
            "step": (self.step, np.int64),
            "epoch_fraction": (self.epoch_fraction, np.float64),
            "train_loss": (self.train_loss, np.float64),
            "run": (self.run, np.int64),
        }
        for name, (values, dtype) in columns.items():
            values = np.asarray(values, dtype=dtype)
            if values.shape != (k,):
                raise ConfigError(
                    f"trajectory {name} has shape {values.shape}, expected ({k},) like params"
                )
            object.__setattr__(self, name, values)
        if buffers.ndim != 2 or buffers.shape[0] != k:
            raise ConfigError(f"trajectory buffers have shape {buffers.shape}, expected ({k}, B)")
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "buffers", buffers)
        for key in ("param_names", "buffer_names"):
            object.__setattr__(self, key, tuple(str(n) for n in getattr(self, key)))
        for key in ("param_shapes", "buffer_shapes"):
            object.__setattr__(
                self, key, tuple(tuple(int(d) for d in s) for s in getattr(self, key))
            )

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
        return int(
            rows[len(rows) - 1 - np.argmax(self.step[rows][::-1])]
        )  # the last of equal steps

    def select(self, run: int) -> Trajectory:
        """The snapshots of one run."""
        keep = self.run == run
        return dataclasses.replace(
            self,
            params=self.params[keep],
            step=self.step[keep],
            epoch_fraction=self.epoch_fraction[keep],
            train_loss=self.train_loss[keep],
            run=self.run[keep],
            buffers=self.buffers[keep],
        )

    @staticmethod
    def concat(parts: list[Trajectory]) -> Trajectory:
        """Stack runs; part i gets run index i."""
        if not parts:
            raise ConfigError("no trajectories to combine")
        cat = lambda key: np.concatenate([getattr(p, key) for p in parts])  # noqa: E731
        return dataclasses.replace(
            parts[0],
            params=cat("params"),
            step=cat("step"),
            buffers=cat("buffers"),
            epoch_fraction=cat("epoch_fraction"),
            train_loss=cat("train_loss"),
            run=np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)]),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``trajectory.npz`` (keys in the module docstring), atomically."""
        return atomic_save_npz(
            path,
            params=self.params,
            step=self.step,
            epoch_fraction=self.epoch_fraction,
            train_loss=self.train_loss,
            run=self.run,
            buffers=self.buffers,
            param_names=np.array(self.param_names, dtype=str),
            param_shapes=np.array([_shape_str(s) for s in self.param_shapes], dtype=str),
            buffer_names=np.array(self.buffer_names, dtype=str),
            buffer_shapes=np.array([_shape_str(s) for s in self.buffer_shapes], dtype=str),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trajectory:
        """Read a file written by :meth:`save`; raises ConfigError if it is missing or not one."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {key: f[key] for key in f.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read trajectory {path} ({exc}); expected a trajectory.npz from "
                f"`fashionlab landscape`"
            ) from exc
        missing = {"params", "step", "epoch_fraction", "train_loss", "run"} - set(arrays)
        if missing:
            raise ConfigError(
                f"{path} is not a trajectory file: keys {sorted(missing)} are missing"
            )
        shapes = lambda key: tuple(
            tuple(int(d) for d in s.split(",") if d) for s in arrays.get(key, [])
        )  # noqa: E731
        return cls(
            arrays["params"],
            arrays["step"],
            arrays["epoch_fraction"],
            arrays["train_loss"],
            arrays["run"],
            arrays.get("buffers"),
            tuple(arrays.get("param_names", ())),
            shapes("param_shapes"),
            tuple(arrays.get("buffer_names", ())),
            shapes("buffer_shapes"),
        )


class TrajectoryRecorder:
    """``on_step`` hook for :func:`fashionlab.population.fit` (or any loop) that keeps parameter
    snapshots.

    A snapshot is taken at step 0, whenever ``epoch_fraction`` crosses a multiple of
    ``1 / snapshots_per_epoch``, and by :meth:`finish` after training (the final parameters).

    Args:
        snapshots_per_epoch: snapshots per epoch (> 0; every step if an epoch has fewer steps).
        run: run index written into the trajectory.
        keep_buffers: also keep each snapshot's floating buffers (BatchNorm running stats).
    """

    def __init__(
        self, snapshots_per_epoch: float = 5.0, *, run: int = 0, keep_buffers: bool = True
    ) -> None:
        if not (is_number(snapshots_per_epoch, finite=True) and snapshots_per_epoch > 0):
            raise ConfigError(
                f"snapshots_per_epoch must be a number > 0, got {snapshots_per_epoch!r}"
            )
        self.snapshots_per_epoch, self.run, self.keep_buffers = (
            float(snapshots_per_epoch),
            run,
            keep_buffers,
        )
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
            params = [p.detach() for p in model.parameters()]
            flat = nn.utils.parameters_to_vector(params).cpu().clone()
            buffers = _float_buffers(model) if self.keep_buffers else []
            flat_buffers = (
                torch.cat([b.detach().reshape(-1).cpu() for _, b in buffers])
                if buffers
                else torch.zeros(0, dtype=flat.dtype)
            )
        if not self._rows:
            named = list(model.named_parameters())
            self._layout = (
                tuple(n for n, _ in named),
                tuple(tuple(p.shape) for _, p in named),
                tuple(n for n, _ in buffers),
                tuple(tuple(b.shape) for _, b in buffers),
            )
        self._rows.append((step, epoch_fraction, loss, flat, flat_buffers))

    def finish(self, model: nn.Module) -> None:
        """Record the final parameters (after the last step) unless that step is already
        recorded."""
        if self._last is None:
            self._record(0, 0.0, model, float("nan"))
        elif self._rows[-1][0] != self._last[0]:
            step, epoch_fraction, loss = self._last
            self._record(step, epoch_fraction, model, loss)

    def trajectory(self) -> Trajectory:
        """The snapshots so far as a :class:`Trajectory`."""
        if not self._rows:
            raise ConfigError(
                "no snapshots recorded: pass the recorder as fit(..., on_step=recorder)"
            )
        steps, fractions, losses, flats, bufs = zip(*self._rows, strict=True)
        return Trajectory(
            torch.stack(flats).numpy(),
            np.array(steps),
            np.array(fractions),
            np.array(losses),
            np.full(len(steps), self.run),
            torch.stack(bufs).numpy(),
            *self._layout,
        )


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
        raise ConfigError(
            f"snapshot {i} (run {trajectory.run[i]}, step {trajectory.step[i]}) has {count} "
            "NaN/inf parameters: that training run diverged; lower the learning rate or drop the "
            "run"
        )
    distinct = len(
        {row.tobytes() for row in trajectory.params}
    )  # exact duplicates; np.unique(axis=0) is slow
    if distinct < 3:
        raise ConfigError(
            f"the trajectory has only {distinct} distinct snapshot(s); two PCA directions need at "
            f"least 3: train for more steps or record more snapshots (--snapshots-per-epoch)"
        )
    if model is None:
        return
    n_model = sum(p.numel() for p in model.parameters())
    if n_model != trajectory.n_params:
        raise ConfigError(
            f"the trajectory's snapshots have {trajectory.n_params} parameters but the model has "
            f"{n_model}: record the trajectory from the same architecture as the model"
        )
    shapes = tuple(tuple(p.shape) for p in model.parameters())
    if trajectory.param_shapes and trajectory.param_shapes != shapes:
        raise ConfigError(
            f"the trajectory's parameter shapes {trajectory.param_shapes[:3]}... differ from the "
            f"model's {shapes[:3]}...: record the trajectory from the same architecture"
        )
    n_buffers = sum(b.numel() for _, b in _float_buffers(model))
    if trajectory.buffers.shape[1] not in (0, n_buffers):
        raise ConfigError(
            f"the trajectory keeps {trajectory.buffers.shape[1]} buffer values per snapshot but "
            f"the model has {n_buffers}: record the trajectory from the same architecture"
        )
