"""Hyperparameter search for the MLP classifier: an Optuna study on a validation split.

:func:`hyperparam_tuning` runs a seeded TPE study whose objective is the accuracy on the
validation part forked from the 60,000 training images (``data.load_train_val``); the test
files are never read. Each trial trains on a stratified subset (``max_train``) for a few epochs
with a cosine schedule; hopeless trials are pruned from their per-epoch validation accuracy
(median rule or successive halving). Because a cosine schedule makes epoch k of a 4-epoch run
incomparable with epoch k of a 12-epoch run, trials report at the *percentage of their schedule*
(``step = round(100 * epoch / epochs)``), so pruning compares trials at the same point of their
own schedule; a net still at chance level after 500 steps (dead ReLUs) is pruned at once. A
diverged trial (loss NaN/inf) is COMPLETE with value 0.0 and user attr ``diverged: true`` — TPE
learns from it and the study goes on.

Search spaces (``SPACES``):

* ``plain`` (the assignment's): hidden_layers {3,4,5}, units {30,40,50}, ReLU, lr 1e-3..0.5 (log),
  batch_size {16,32,64,128,256}, epochs (``TuneConfig.epochs`` choices), l2 1e-6..1e-2 (log),
  momentum {0, 0.9}.
* ``variant``: hidden_layers {2,3}, units {128,256}, activation {relu, leaky_relu, elu, prelu},
  batchnorm {no, yes}, dropout 0..0.5 (step 0.05), lr 1e-3..0.5 (log), batch_size {32,64,128,256}, epochs,
  l2 1e-6..1e-2 (log), momentum {0, 0.9}. (512 units would triple the cost of a trial and of the
  retrain on two CPU cores.)

A fresh study first runs one enqueued, well-known setting of its space (``BASELINES``), so the
best trial is never worse than a careful hand recipe.

Storage and workers: the default storage is ``sqlite:///<out_dir>/study.db`` (``%``, ``?``, ``{``
and ``}`` of the path percent-encoded, so that every path names its own file); re-running with the
same ``out_dir`` (or the same ``storage`` and ``study_name``) resumes the study until ``n_trials``
trials are COMPLETE or PRUNED (a resume must keep the settings that define a trial's value: space,
epochs, max_train, val_size, seed, schedule). ``postgresql://user:pw@host/db`` (sent to SQLAlchemy as
``postgresql+psycopg://``; ``pip install 'fashionlab[postgres]'``) lets workers on several machines
share one study. ``workers=N`` starts N spawned local processes that each open the same storage —
the database, not a lock in this process, hands out trials. Finished trials are committed one by
one, so a killed process loses only the trial it was running, which is marked FAIL and its setting
retried once: at once when the process ran on this host (the OS says it is gone), else when its
heartbeat has been silent for ``2 * heartbeat_s + 60`` seconds. A local worker that dies does not
stop the others; only if all of them die is it an error. Workers die with the process that started
them, however it ends. Trial k samples its setting with a TPE
sampler seeded from ``(seed, k)`` and trains with seed ``seed + k``, so with ``workers=1`` the same
seed gives the same trials and values on CPU; with several workers (or machines) each trial still
gets its own random draws, but what TPE has seen when it proposes trial k depends on timing.

Files written to ``out_dir`` (documented for the report):

``trials.csv`` — one row per trial, columns: number, state (COMPLETE | PRUNED | FAIL | RUNNING |
WAITING), value (validation accuracy; last reported accuracy for a pruned trial; 0.0 if diverged),
val_acc, val_loss, diverged, epochs_run, last_step (percent of the schedule reached), duration_s,
datetime_start, datetime_complete, then one ``param_<name>`` column per searched parameter.

``trials.json`` — ``{"schema_version": 1, "study", "space", "storage" (password hidden),
"direction": "maximize", "trials": [{"number", "state", "value", "params", "user_attrs"
(val_acc, val_loss, val_acc_history, val_loss_history, diverged, epochs_run, last_step,
train_examples, val_examples, seed, worker ("host:pid"), worker_process (boot id, pid namespace
and start time of that process, on Linux), seconds), "duration_s", "datetime_start",
"datetime_complete"}]}``.

``best.json`` — ``{"schema_version": 1, "study", "space", "storage", "number", "value" (= val_acc),
"val_acc", "val_loss", "searched" (the Optuna params), "params" (the full flat setting:
model keys hidden_layers, units, activation, batchnorm, dropout and training keys lr,
batch_size, epochs, l2, momentum, nesterov, schedule — what :func:`settings_from_params` and
``classifier.run_classifier`` take), "model" (MLP config), "train" (TrainConfig dict),
"counts" {complete, pruned, fail, running, waiting, finished (= complete + pruned)},
"train_examples", "val_examples",
"config" (TuneConfig), "seconds" (wall time of this call)}``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _tune_storage

# Storage, worker processes and export live in private modules; open_storage and export_study are
# re-exported here (see __all__).
from ._tune_export import export_study
from ._tune_storage import (
    _count,
    _create_or_load,
    _run_worker,
    _spawn_workers,
    open_storage,
    redact,
    sqlite_url,
)
from .errors import ConfigError
from .utils import Stopwatch, seed_everything
from .validation import ALL, check_count, check_int

__all__ = [
    "SPACES", "BASELINES", "DEFAULT_TRIALS", "TuneConfig", "TuneResult", "hyperparam_tuning", "settings_from_params",
    "suggest_params", "quick_tune_config", "open_storage", "export_study",
]

logger = logging.getLogger(__name__)

SPACES = ("plain", "variant")
PLAIN_BATCHES = (16, 32, 64, 128, 256)
VARIANT_BATCHES = (32, 64, 128, 256)
# Hand recipes enqueued as trial 0 of a fresh study (epochs filled in from the config).
BASELINES: dict[str, dict[str, Any]] = {
    # Chosen on the 50,000/10,000 validation split: 3x50 with L2 1e-3 trained 60 epochs reached 89.6 % val
    # accuracy (mean of seeds 0 and 1; lr 0.02 and 0.03 alike), the earlier 4x50 / L2 5e-4 / 30 epochs 89.4 %.
    "plain": {"hidden_layers": 3, "units": 50, "lr": 0.03, "batch_size": 64, "l2": 1e-3, "momentum": 0.9},
    "variant": {"hidden_layers": 2, "units": 256, "activation": "relu", "batchnorm": True, "dropout": 0.2,
                "lr": 0.05, "batch_size": 128, "l2": 5e-4, "momentum": 0.9},
}
DEFAULT_TRIALS = {"plain": 24, "variant": 12}
DEAD_ACCURACY, DEAD_STEPS = 0.2, 500  # below 0.2 validation accuracy after 500 steps: a dead net
_MODEL_KEYS = ("hidden_layers", "units", "activation", "batchnorm", "dropout")
_TRAIN_KEYS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "l2", "schedule")


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

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"unknown search space {self.space!r}; choose one of {SPACES}")
        if self.n_trials is None:
            object.__setattr__(self, "n_trials", DEFAULT_TRIALS[self.space])
        check_int("n_trials", self.n_trials, 1)
        check_count("max_train", self.max_train)
        if self.max_train is not None and self.max_train < max(self.batch_choices):
            raise ConfigError(f"max_train {self.max_train} is smaller than the largest batch size "
                              f"{max(self.batch_choices)} of the {self.space} space; use max_train >= "
                              f"{max(self.batch_choices)}")
        if not _is_int(self.val_size) or not 0 < self.val_size < 60_000:
            raise ConfigError(f"val_size must be an integer in 1..59999, got {self.val_size!r}")
        if not isinstance(self.epochs, (list, tuple)):
            raise ConfigError(f"epochs must be a list of integers >= 1, got {self.epochs!r}; "
                              f"e.g. epochs = [{self.epochs!r}] for one choice")
        object.__setattr__(self, "epochs", tuple(self.epochs))
        if not self.epochs or any(not _is_int(e) or e < 1 for e in self.epochs):
            raise ConfigError(f"epochs must be a non-empty list of integers >= 1, got {self.epochs!r}")
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
        name = self.study_name
        if name is not None and not (isinstance(name, str) and name.strip()):
            raise ConfigError(f"study_name must be a non-empty string, got {name!r}; leave it out "
                              f"for fashionlab-<space>")
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


def quick_tune_config(space: str = "plain", **overrides: Any) -> TuneConfig:
    """A ~10-20-second study for ``--quick`` runs: 8 trials of 1-2 epochs on 4,000 examples."""
    settings: dict[str, Any] = {"space": space, "n_trials": 8, "max_train": 4000, "epochs": (1, 2)}
    settings.update(overrides)
    return TuneConfig(**settings)


@dataclass
class TuneResult:
    """What :func:`hyperparam_tuning` found; ``best`` is the content of best.json."""

    out_dir: Path
    study_name: str
    storage: str
    best: dict[str, Any]
    counts: dict[str, int]
    trials_run: int  # trials this call ran (its workers together); the study may hold more
    seconds: float

    @property
    def best_params(self) -> dict[str, Any]:
        """The full flat setting of the best trial (input of ``classifier.run_classifier``)."""
        return self.best["params"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- search spaces

def suggest_params(trial: Any, config: TuneConfig) -> dict[str, Any]:
    """Sample one setting of ``config.space`` from an Optuna trial; returns the full flat setting."""
    params: dict[str, Any] = {}
    if config.space == "plain":
        params["hidden_layers"] = trial.suggest_categorical("hidden_layers", [3, 4, 5])
        params["units"] = trial.suggest_categorical("units", [30, 40, 50])
        params["activation"], params["batchnorm"], params["dropout"] = "relu", False, 0.0
    else:
        params["hidden_layers"] = trial.suggest_categorical("hidden_layers", [2, 3])
        params["units"] = trial.suggest_categorical("units", [128, 256])
        params["activation"] = trial.suggest_categorical("activation", ["relu", "leaky_relu", "elu", "prelu"])
        params["batchnorm"] = trial.suggest_categorical("batchnorm", [False, True])
        params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5, step=0.05)  # short model names
    params["lr"] = trial.suggest_float("lr", 1e-3, 0.5, log=True)
    params["batch_size"] = trial.suggest_categorical("batch_size", list(config.batch_choices))
    params["epochs"] = trial.suggest_categorical("epochs", list(config.epochs))
    params["l2"] = trial.suggest_float("l2", 1e-6, 1e-2, log=True)
    params["momentum"] = trial.suggest_categorical("momentum", [0.0, 0.9])
    params["nesterov"] = False
    params["schedule"] = config.schedule
    return params


def settings_from_params(params: dict[str, Any], seed: int = 0,
                         epochs: int | None = None) -> tuple[dict[str, Any], Any]:
    """Turn a flat setting (best.json ``params``) into ``(MLP config, TrainConfig)``.

    Missing keys take the defaults of :class:`~fashionlab.models.MLP` and
    :class:`~fashionlab.train.TrainConfig`; ``epochs`` overrides the setting's epochs.

    Raises:
        ConfigError: unknown keys or an impossible value (checked by MLP and TrainConfig).
    """
    from .models import MLP
    from .train import TrainConfig

    unknown = sorted(set(params) - set(_MODEL_KEYS) - set(_TRAIN_KEYS) - {"seed"})
    if unknown:
        raise ConfigError(f"unknown setting keys {unknown}; expected some of {_MODEL_KEYS + _TRAIN_KEYS}")
    model_config = {k: params[k] for k in _MODEL_KEYS if k in params}
    for key in ("hidden_layers", "units"):
        if key not in model_config:
            raise ConfigError(f"the setting {params} lacks {key!r}")
    train_kwargs = {k: params[k] for k in _TRAIN_KEYS if k in params}
    if epochs is not None:
        train_kwargs["epochs"] = epochs
    train_config = TrainConfig(seed=seed, **train_kwargs)
    model_config = MLP(**model_config).config  # validates and fills the defaults
    return model_config, train_config


# --------------------------------------------------------------------------- the study

def hyperparam_tuning(out_dir: str | os.PathLike[str], config: TuneConfig | None = None, *,
                      data_dir: str | os.PathLike[str] | None = None, splits: tuple[Any, Any] | None = None,
                      progress: bool = False,
                      clock: Callable[[], float] = time.monotonic) -> TuneResult:
    """Run (or resume) the Optuna study of ``config.space`` and export its trials.

    Args:
        out_dir: the stage directory (study.db by default, trials.csv, trials.json, best.json).
        config: the study settings (default :class:`TuneConfig`).
        data_dir: the Fashion-MNIST folder (default: the data layer's search order).
        splits: ``(train, val)`` Splits to use instead of ``load_train_val`` (``max_train`` still
            subsets ``train``); for tests and other data.
        progress: a tqdm bar over the trials of this call (single worker only).
        clock: monotonic seconds; times ``timeout_s`` and how long a RUNNING trial that names no
            owner process may wait before it is taken for dead (``workers=1`` only; for tests).

    Returns:
        A :class:`TuneResult` whose ``best`` is what best.json holds.

    Raises:
        ConfigError: bad settings, an unusable storage URL, or a study of another space.
        FashionLabError: no trial completed, or a worker failed.
        StorageError: the database or the folder cannot be written (disk full, read-only, locked,
            corrupt); it names the file and the cause.
    """
    config = config or TuneConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage_url = config.storage or sqlite_url(out_dir.resolve() / "study.db")
    if splits is not None:
        n_train = min(len(splits[0]), config.max_train or len(splits[0]))
        if n_train < max(config.batch_choices):
            raise ConfigError(f"the training split has {n_train} examples, fewer than the largest batch size "
                              f"{max(config.batch_choices)} of the {config.space} space; give more examples")
    with Stopwatch() as watch, _tune_storage.database_errors(storage_url):
        storage = open_storage(storage_url, config.heartbeat_s)
        study = _create_or_load(storage, storage_url, config)
        done = _count(study)["finished"]
        logger.info("study %s (%s space) in %s: %d of %d trials finished, running the rest with %d worker(s)",
                    config.name, config.space, redact(storage_url), done, config.n_trials, config.workers)
        if config.workers == 1:
            ran = _run_worker(storage_url, config, progress, data_dir, splits, storage, clock)
        else:
            ran = _spawn_workers(storage_url, config, data_dir, splits, study)
    best = export_study(out_dir, study, config, storage_url, watch.seconds)
    return TuneResult(out_dir, config.name, redact(storage_url), best, best["counts"], ran, watch.seconds)


def _sampler(config: TuneConfig):
    """TPE reseeded per trial from ``(seed, trial number)``."""
    return _trial_seeded_tpe_class()(config.seed, n_startup_trials=min(8, config.n_trials))


@functools.cache
def _trial_seeded_tpe_class():
    """The sampler class, made on first use so that importing this module does not import Optuna."""
    import optuna

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        """A fresh ``TPESampler(seed=f(seed, trial.number))`` for every trial.

        One seeded TPESampler per *process* would make every process (or machine) sharing a
        study propose the same random start-up settings; seeding per *trial number* keeps one
        process reproducible and gives every trial of a shared study its own random draws.
        ``constant_liar`` treats trials still running elsewhere as bad, so workers spread out.
        """

        def __init__(self, seed: int, **tpe_options: Any) -> None:
            self.seed, self.tpe_options, self._current = seed, tpe_options, {}

        def _tpe(self, trial):
            if trial.number not in self._current:
                with warnings.catch_warnings():  # multivariate TPE and constant_liar are "experimental"
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._current[trial.number] = optuna.samplers.TPESampler(
                        seed=(self.seed * 1_000_003 + trial.number) % 2**32, multivariate=True,
                        constant_liar=True, **self.tpe_options)
            return self._current[trial.number]

        def infer_relative_search_space(self, study, trial):
            return self._tpe(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self._tpe(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            sampler = self._current.pop(trial.number, None)
            if sampler is not None:
                sampler.after_trial(study, trial, state, values)

    return TrialSeededTPE


def _pruner(config: TuneConfig):
    import optuna

    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    if config.pruner == "halving":
        # Steps are percent of the schedule: rungs at 30 % and 90 %.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=30, reduction_factor=3)
    # Never prune before a third of the schedule; compare at equal fractions (see module docstring).
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=30)


class _Objective:
    """Train one sampled setting on the subset; the value is the final validation accuracy."""

    def __init__(self, train, val, config: TuneConfig) -> None:
        self.train, self.val, self.config = train, val, config

    def __call__(self, trial) -> float:
        import optuna

        from .models import MLP
        from .train import fit

        params = suggest_params(trial, self.config)
        model_config, train_config = settings_from_params(params, seed=self.config.seed + trial.number)
        trial.set_user_attr("train_examples", len(self.train))
        trial.set_user_attr("val_examples", len(self.val))
        trial.set_user_attr("seed", train_config.seed)
        accs: list[float] = []
        losses: list[float] = []

        def on_epoch(epoch: int, val_acc: float, val_loss: float) -> None:
            accs.append(val_acc)
            losses.append(val_loss)
            step = round(100 * epoch / train_config.epochs)
            trial.report(val_acc, step)
            # A net still at chance level after DEAD_STEPS SGD steps has died (every ReLU off, e.g. lr 0.3
            # with momentum): it does not recover, so it is pruned at once, before the median rule may.
            steps = epoch * -(-len(self.train) // train_config.batch_size)
            dead = self.config.pruner != "none" and steps >= DEAD_STEPS and val_acc < DEAD_ACCURACY
            if dead or trial.should_prune():
                self._record(trial, accs, losses, diverged=False, step=step, seconds=None)
                _log_trial(trial.number, "PRUNED", val_acc, time.perf_counter() - start, params, step)
                raise optuna.TrialPruned(f"val_acc {val_acc:.4f} at {step}% of the schedule")

        start = time.perf_counter()
        seed_everything(train_config.seed)  # the initial weights, too, come from the trial's seed
        model = MLP(**model_config)
        result = fit(model, self.train, train_config, val=self.val, device=self.config.device, on_epoch=on_epoch)
        self._record(trial, accs, losses, result.diverged, step=100 if not result.diverged else None,
                     seconds=result.seconds)
        value = 0.0 if result.diverged else float(result.history.val_acc[-1])
        _log_trial(trial.number, "DIVERGED" if result.diverged else "COMPLETE", value, result.seconds, params, 100)
        return value

    @staticmethod
    def _record(trial, accs, losses, diverged: bool, step: int | None, seconds: float | None) -> None:
        finite = [x for x in losses if math.isfinite(x)]
        trial.set_user_attr("diverged", bool(diverged))
        trial.set_user_attr("val_acc_history", accs)
        trial.set_user_attr("val_loss_history", [x if math.isfinite(x) else None for x in losses])
        trial.set_user_attr("val_acc", accs[-1] if accs else None)
        trial.set_user_attr("val_loss", finite[-1] if finite and not diverged else None)
        trial.set_user_attr("epochs_run", len(accs))
        trial.set_user_attr("last_step", step)
        if seconds is not None:
            trial.set_user_attr("seconds", seconds)


def _log_trial(number: int, state: str, value: float, seconds: float, params: dict[str, Any], step: int) -> None:
    searched = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in params.items()
                if k not in ("nesterov", "schedule")}
    logger.info("trial %3d  %-8s val_acc %.4f  at %3d%%  %5.1f s  %s", number, state, value, step, seconds,
                " ".join(f"{k}={v}" for k, v in searched.items()))
