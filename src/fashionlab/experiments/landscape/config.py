"""Settings of the loss-landscape experiment."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ...errors import ConfigError
from ...train import TrainConfig
from ...validation import ALL
from .plane import grid_axes
from .trajectory import TrajectoryRecorder

__all__ = ["LandscapeConfig", "ModelSpec", "model_label"]

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
    # Batch 50 divides the 2,500 examples: fit keeps a last, smaller batch (2,500 = 39 x 64 + 4),
    # and a step on 4 examples spikes the loss at every epoch end.
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=15, batch_size=50, lr=0.05)
    )
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
            raise ConfigError(
                f"model must be a registry name (e.g. mlp_4x50), an MLP config dict or a callable, "
                f"got {self.model!r}"
            )
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        for name, low in (("eval_examples", 1), ("runs", 1), ("seed", 0), ("data_seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(
                    f"LandscapeConfig.{name} must be an integer >= {low}, got {value!r}"
                )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be None or an integer >= 1, got {self.threads!r}")
        if self.runs > 4:
            raise ConfigError(
                f"runs must be between 1 and 4 (one figure, distinguishable paths), got {self.runs}"
            )
        if self.subset is not None and (
            not isinstance(self.subset, int) or self.subset < self.train.batch_size
        ):
            raise ConfigError(
                f"subset must be None (full training set) or an integer >= the batch size "
                f"{self.train.batch_size}, got {self.subset!r}"
            )
        TrajectoryRecorder(self.snapshots_per_epoch)  # validates
        grid_axes(np.zeros((1, 2)), self.resolution, self.margin)  # validates
        if not (isinstance(self.memory_budget_mb, (int, float)) and self.memory_budget_mb > 0):
            raise ConfigError(
                f"memory_budget_mb must be a number > 0, got {self.memory_budget_mb!r}"
            )

    @classmethod
    def quick(cls, **overrides: Any) -> LandscapeConfig:
        """A smoke-test setting: 3 epochs, an 11 x 11 grid (seconds)."""
        settings: dict[str, Any] = {
            "train": TrainConfig(epochs=3, batch_size=50, lr=0.05),
            "resolution": 11,
        }
        return cls(**{**settings, **overrides})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["train"] = self.train.to_dict()
        out["model"] = model_label(self.model)
        return out


def model_label(spec: ModelSpec) -> Any:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return dict(spec)
    return getattr(spec, "__qualname__", repr(spec))
