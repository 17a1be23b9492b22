"""Settings of the loss-landscape experiment."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ...canonical import Canonical
from ...errors import ConfigError
from ...train import TrainConfig
from ...validation import ALL, check_int, check_parallel, check_seed, is_int, is_number
from .plane import grid_axes
from .trajectory import TrajectoryRecorder

__all__ = ["LandscapeConfig", "ModelSpec", "TUNED", "model_label"]

ModelSpec = str | Mapping[str, Any] | Callable[[], nn.Module]
# The model of the study's landscape: the architecture of the retrained plain classifier, known
# once it has run (:meth:`LandscapeConfig.with_tuned_model`).
TUNED = "tuned"


@dataclass(frozen=True)
class LandscapeConfig(Canonical):
    """Settings of the landscape stage.

    ``model``: a registry name (``mlp_4x50``), an MLP config dict, or a zero-argument callable
    returning a module. ``subset``: training examples (None = the full 60,000); ``eval_examples``:
    the fixed, seeded subset the heights are evaluated on (the same examples as the training
    subset when both are 2,500, both drawn with ``data_seed``). Run r is initialised with seed
    ``seed + r``; all runs see the same minibatch order (``train.seed``). ``threads``: torch CPU
    threads during the stage (None: leave torch's setting; 1: no OpenMP threads that spin on
    shared cores).

    Training length, chosen on the training subset itself (:mod:`.training`): after each epoch
    the f_CE on the whole subset; ``plateau_patience`` epochs without a relative improvement above
    ``plateau_tol`` multiply the learning rate by ``lr_decay``; the plateau after ``lr_decays``
    such cuts ends training; ``train.epochs`` is a cap (``plateau_tol=None``: exactly
    ``train.epochs`` at ``train``'s schedule). Grid: ``margin`` on every side to start with; while
    the surface's minimum near a run's final model is on the grid's edge, that side's margin is
    doubled, at most ``margin_growths`` times. ``basin_tol``: the basin criterion's tolerance, a
    fraction of the surface's loss range (:mod:`.basin`). ``max_snapshots``: per run, kept evenly
    along the path's length.
    """

    model: ModelSpec = field(default="mlp_4x50", hash=False)
    # Batch 50 divides the 2,500 examples: fit keeps a last, smaller batch (2,500 = 39 x 64 + 4),
    # and a step on 4 examples spikes the loss at every epoch end.
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=150, batch_size=50, lr=0.05)
    )
    subset: int | None = field(default=2500, metadata=ALL)
    eval_examples: int = 2500
    snapshots_per_epoch: float = 5.0
    max_snapshots: int = 60
    plateau_tol: float | None = 0.01
    plateau_patience: int = 3
    lr_decay: float = 0.2
    lr_decays: int = 2
    resolution: int = 31
    margin: float = 0.25
    margin_growths: int = 4
    basin_tol: float = 0.02
    runs: int = 2
    memory_budget_mb: float = 128.0
    seed: int = 0
    data_seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, (str, Mapping)) and not callable(self.model):
            raise ConfigError(
                f"model must be a registry name (e.g. mlp_4x50), an MLP config dict or a callable, "
                f"got {self.model!r}"
            )
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        for name, low in (
            ("eval_examples", 1),
            ("runs", 1),
            ("max_snapshots", 3),
            ("plateau_patience", 1),
            ("lr_decays", 0),
            ("margin_growths", 0),
        ):
            check_int(f"LandscapeConfig.{name}", getattr(self, name), low)
        check_seed("LandscapeConfig.seed", self.seed)
        check_seed("LandscapeConfig.data_seed", self.data_seed)
        check_parallel("threads", self.threads, optional=True)
        if self.runs > 4:
            raise ConfigError(
                f"runs must be between 1 and 4 (one figure, distinguishable paths), got {self.runs}"
            )
        if self.subset is not None and (
            not is_int(self.subset) or self.subset < self.train.batch_size
        ):
            raise ConfigError(
                f"subset must be None (full training set) or an integer >= the batch size "
                f"{self.train.batch_size}, got {self.subset!r}"
            )
        for name, low, high in (("lr_decay", 0.0, 1.0), ("basin_tol", 0.0, 1.0)):
            value = getattr(self, name)
            if not is_number(value, finite=True) or not low < value < high:
                raise ConfigError(
                    f"LandscapeConfig.{name} must be a number in ({low:g}, {high:g}), got {value!r}"
                )
        if self.plateau_tol is not None and not (
            is_number(self.plateau_tol, finite=True) and self.plateau_tol >= 0
        ):
            raise ConfigError(
                f"plateau_tol must be None (train exactly train.epochs) or a number >= 0, got "
                f"{self.plateau_tol!r}"
            )
        if self.plateau_tol is not None and self.train.schedule != "constant":
            raise ConfigError(
                f"train.schedule {self.train.schedule!r} and the plateau rule both set the "
                f"learning rate: use schedule 'constant', or plateau_tol = None"
            )
        TrajectoryRecorder(self.snapshots_per_epoch)  # validates
        grid_axes(np.zeros((1, 2)), self.resolution, self.margin)  # validates
        if not (is_number(self.memory_budget_mb, finite=True) and self.memory_budget_mb > 0):
            raise ConfigError(
                f"memory_budget_mb must be a number > 0, got {self.memory_budget_mb!r}"
            )

    @classmethod
    def quick(cls, **overrides: Any) -> LandscapeConfig:
        """A smoke-test setting: at most 3 epochs, an 11 x 11 grid."""
        settings: dict[str, Any] = {
            "train": TrainConfig(epochs=3, batch_size=50, lr=0.05),
            "resolution": 11,
        }
        return cls.from_dict({**settings, **overrides})

    @classmethod
    def for_study(cls, *, quick: bool = False, **overrides: Any) -> LandscapeConfig:
        """The landscape of ``fashionlab run`` (:meth:`quick` when ``quick``): the tuned
        classifier's architecture (model :data:`TUNED`) on one CPU thread, since a small MLP on
        2,500 examples is overhead-bound and extra OpenMP threads only spin; ``overrides`` on top.
        """
        settings = {"model": TUNED, "threads": 1, **overrides}
        return cls.quick(**settings) if quick else cls.from_dict(settings)

    def with_tuned_model(self, tuned: Mapping[str, Any]) -> LandscapeConfig:
        """This config with model :data:`TUNED` replaced by the MLP config ``tuned`` of the
        retrained classifier, kept to its depth, width and activation: the landscape shows the
        architecture without the randomness of dropout and BatchNorm. Another model: unchanged.
        """
        if self.model != TUNED:
            return self
        keys = ("hidden_layers", "units", "activation")
        return dataclasses.replace(self, model={key: tuned[key] for key in keys})


def model_label(spec: ModelSpec) -> Any:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return dict(spec)
    return getattr(spec, "__qualname__", repr(spec))
