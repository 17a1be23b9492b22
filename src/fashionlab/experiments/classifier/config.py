"""Settings of the classifier experiment: the tuning study and the retrain."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from ...validation import ALL, check_count, check_int
from .space import PLAIN_BATCHES, SPACES, VARIANT_BATCHES

__all__ = ["DEFAULT_TRIALS", "RETRAIN_EPOCHS", "TuneConfig", "ClassifierConfig", "retrain_config"]

DEFAULT_TRIALS = {"plain": 24, "variant": 12}


@dataclass(frozen=True)
class TuneConfig:
    """Settings of one tuning study.

    Args:
        space: ``plain`` or ``variant`` (see the module docstring).
        n_trials: trials to have COMPLETE or PRUNED in the study when done (resumes count);
            None: ``DEFAULT_TRIALS[space]`` (24 plain, 12 variant: its trials cost ~3x more).
        max_train: each trial trains on a stratified subset of this many of the 50,000 training
            examples (None: all of them); the validation part is always whole.
        val_size: validation examples forked from the 60,000 training images.
        epochs: the epoch counts the search chooses from.
        pruner: ``median`` (MedianPruner), ``halving`` (SuccessiveHalvingPruner) or ``none``.
        workers: local processes on the study (1: in this process, reproducible).
        storage: an SQLAlchemy URL; None: ``sqlite:///<out_dir>/study.db``.
        study_name: None: ``fashionlab-<space>``.
        seed: seeds the data split and subset; trial k samples its setting with TPE seeded from
            ``(seed, k)`` and trains with seed ``seed + k``.
        schedule: the learning-rate schedule of every trial (``cosine`` or ``constant``).
        timeout_s: no new trial starts after this many seconds (None: no limit).
        threads: torch CPU threads per worker (None: leave torch's setting).
        heartbeat_s: how often a running trial says it is alive; silent for twice that plus a
            minute, a trial of another host is taken for dead (one of this host: when its
            process is gone).
        device: where trials train.
        dead_steps: a trial still below 20 % validation accuracy after this many SGD steps is a
            dead net (every ReLU off) and is pruned at once (with any pruner but ``none``).
    """

    space: str = "plain"
    n_trials: int | None = None
    max_train: int | None = field(default=20_000, metadata=ALL)
    val_size: int = 10_000
    epochs: tuple[int, ...] = (4, 8, 12)
    pruner: str = "median"
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    schedule: str = "cosine"
    timeout_s: float | None = None
    threads: int | None = 1
    heartbeat_s: int = 10
    device: str = "cpu"
    dead_steps: int = 500

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"unknown search space {self.space!r}; choose one of {SPACES}")
        if self.n_trials is None:
            object.__setattr__(self, "n_trials", DEFAULT_TRIALS[self.space])
        check_int("n_trials", self.n_trials, 1)
        check_count("max_train", self.max_train)
        if self.max_train is not None and self.max_train < max(self.batch_choices):
            raise ConfigError(
                f"max_train {self.max_train} is smaller than the largest batch size "
                f"{max(self.batch_choices)} of the {self.space} space; use max_train >= "
                f"{max(self.batch_choices)}"
            )
        if not _is_int(self.val_size) or not 0 < self.val_size < 60_000:
            raise ConfigError(f"val_size must be an integer in 1..59999, got {self.val_size!r}")
        if not isinstance(self.epochs, (list, tuple)):
            raise ConfigError(
                f"epochs must be a list of integers >= 1, got {self.epochs!r}; "
                f"e.g. epochs = [{self.epochs!r}] for one choice"
            )
        object.__setattr__(self, "epochs", tuple(self.epochs))
        if not self.epochs or any(not _is_int(e) or e < 1 for e in self.epochs):
            raise ConfigError(
                f"epochs must be a non-empty list of integers >= 1, got {self.epochs!r}"
            )
        if self.pruner not in ("median", "halving", "none"):
            raise ConfigError(f"pruner must be median, halving or none, got {self.pruner!r}")
        check_int("workers", self.workers, 1)
        check_int("seed", self.seed, 0)
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if self.timeout_s is not None and not (_is_number(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(f"timeout_s must be None or a number > 0, got {self.timeout_s!r}")
        check_int("threads", self.threads, 1, optional=True)
        check_int("heartbeat_s", self.heartbeat_s, 1)
        check_int("dead_steps", self.dead_steps, 1)
        name = self.study_name
        if name is not None and not (isinstance(name, str) and name.strip()):
            raise ConfigError(
                f"study_name must be a non-empty string, got {name!r}; leave it out "
                f"for fashionlab-<space>"
            )
        if self.storage is not None and not isinstance(self.storage, str):
            raise ConfigError(f"storage must be an SQLAlchemy URL string, got {self.storage!r}")

    @property
    def batch_choices(self) -> tuple[int, ...]:
        return PLAIN_BATCHES if self.space == "plain" else VARIANT_BATCHES

    @property
    def name(self) -> str:
        """The study name."""
        return self.study_name or f"fashionlab-{self.space}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def quick(cls, **overrides: Any) -> TuneConfig:
        """A ~10-20-second study for ``--quick`` runs: 8 trials of 1-2 epochs on 4,000 examples."""
        return cls(**{"n_trials": 8, "max_train": 4000, "epochs": (1, 2), **overrides})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ClassifierConfig:
    """Retrain settings.

    Args:
        epochs: epochs of the retrain (default 60, see the module docstring); None: the tuned
            epochs.
        max_train: train on a stratified subset of this many of the 60,000 images (quick runs).
        last_n: how many final SGD iterations the figure shows (the assignment's 20).
        label: name of this model in files and figure (``plain``, ``variant``).
        seed: the training seed (weights, shuffling, dropout).
        device: where to train and test.
        threads: torch CPU threads while training (None: leave torch's setting). One by default:
            these small matrices gain little from a second thread, and lose a lot when the cores are
            shared (measured: 3 epochs of 2x256 in 16 s with 1 thread, 98 s with 2 on a busy
            machine).
    """

    epochs: int | None = 60
    max_train: int | None = field(default=None, metadata=ALL)
    last_n: int = 20
    label: str = "plain"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1, optional=True)
        check_count("max_train", self.max_train)
        check_int("threads", self.threads, 1, optional=True)
        check_int("last_n", self.last_n, 1)
        check_int("seed", self.seed, 0)
        if not isinstance(self.label, str) or not self.label or "/" in self.label:
            raise ConfigError(f"label must be a non-empty name without '/', got {self.label!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> ClassifierConfig:
        """A few-second retrain for ``--quick`` runs: 3 epochs on 10,000 training images."""
        return cls(**{"epochs": 3, "max_train": 10_000, **overrides})


# How long each space's pick is retrained: the one home of these lengths, for `fashionlab run` and
# `fashionlab tune --space` alike (the variant's wider layers make an epoch ~5x dearer).
RETRAIN_EPOCHS = {"plain": 60, "variant": 30}


def retrain_config(space: str, *, quick: bool = False, **overrides: Any) -> ClassifierConfig:
    """The retrain settings of ``space``'s pick (named ``space``); ``overrides`` on top."""
    if space not in SPACES:
        raise ConfigError(f"unknown search space {space!r}; choose one of {SPACES}")
    if quick:
        return ClassifierConfig.quick(label=space, **overrides)
    return ClassifierConfig(**{"label": space, "epochs": RETRAIN_EPOCHS[space], **overrides})
