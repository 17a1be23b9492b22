"""Hyperparameter search for the MLP classifier: an Optuna study on a validation split.

:func:`hyperparam_tuning` runs a seeded TPE study whose objective is the accuracy on the
validation part forked from the 60,000 training images (``data.load_train_val``); the test
files are never read. Each trial trains on a stratified subset (``max_train``) for a few epochs
with a cosine schedule; hopeless trials are pruned from their per-epoch validation accuracy
(median rule or successive halving). Because a cosine schedule makes epoch k of a 3-epoch run
incomparable with epoch k of a 9-epoch run, trials report at the *percentage of their schedule*
(``step = round(100 * epoch / epochs)``), so pruning compares trials at the same point of their
own schedule. A diverged trial (loss NaN/inf) is COMPLETE with value 0.0 and user attr
``diverged: true`` — TPE learns from it and the study goes on.

Search spaces (``SPACES``):

* ``plain`` (the assignment's): hidden_layers {3,4,5}, units {30,40,50}, ReLU, lr 1e-3..0.5 (log),
  batch_size {16,32,64,128,256}, epochs (``TuneConfig.epochs`` choices), l2 1e-6..1e-2 (log),
  momentum {0, 0.9}.
* ``variant``: hidden_layers {2,3}, units {128,256,512}, activation {relu, leaky_relu, elu, prelu},
  batchnorm {no, yes}, dropout 0..0.5, lr 1e-3..0.5 (log), batch_size {32,64,128,256}, epochs,
  l2 1e-6..1e-2 (log), momentum {0, 0.9}.

A fresh study first runs one enqueued, well-known setting of its space (``BASELINES``), so the
best trial is never worse than a careful hand recipe.

Storage and workers: the default storage is ``sqlite:///<out_dir>/study.db``; re-running with the
same ``out_dir`` (or the same ``storage`` and ``study_name``) resumes the study until ``n_trials``
trials are COMPLETE or PRUNED. ``postgresql://user:pw@host/db`` (sent to SQLAlchemy as
``postgresql+psycopg://``; ``pip install 'fashionlab[postgres]'``) lets workers on several machines
share one study. ``workers=N`` starts N spawned local processes that each open the same storage —
the database, not a lock in this process, hands out trials. Finished trials are committed one by
one, so a killed process loses only the trial it was running: a heartbeat marks that trial FAIL
after ``2 * heartbeat_s`` and its setting is retried once. With ``workers=1`` the same seed gives
the same trials (TPE seeded with ``seed``; trial k trains with seed ``seed + k``); with several
workers the order in which trials finish — and so what TPE proposes — depends on timing.

Files written to ``out_dir`` (documented for the report):

``trials.csv`` — one row per trial, columns: number, state (COMPLETE | PRUNED | FAIL | RUNNING |
WAITING), value (validation accuracy; last reported accuracy for a pruned trial; 0.0 if diverged),
val_acc, val_loss, diverged, epochs_run, last_step (percent of the schedule reached), duration_s,
datetime_start, datetime_complete, then one ``param_<name>`` column per searched parameter.

``trials.json`` — ``{"schema_version": 1, "study", "space", "storage" (password hidden),
"direction": "maximize", "trials": [{"number", "state", "value", "params", "user_attrs"
(val_acc, val_loss, val_acc_history, val_loss_history, diverged, epochs_run, last_step,
train_examples, val_examples, seed, seconds), "duration_s", "datetime_start", "datetime_complete"}]}``.

``best.json`` — ``{"schema_version": 1, "study", "space", "storage", "number", "value" (= val_acc),
"val_acc", "val_loss", "searched" (the Optuna params), "params" (the full flat setting:
model keys hidden_layers, units, activation, batchnorm, dropout and training keys lr,
batch_size, epochs, l2, momentum, nesterov, schedule — what :func:`settings_from_params` and
``classifier.run_classifier`` take), "model" (MLP config), "train" (TrainConfig dict),
"counts" {complete, pruned, fail, running, waiting, total}, "train_examples", "val_examples",
"config" (TuneConfig), "seconds" (wall time of this call)}``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, FashionLabError
from .utils import Stopwatch, atomic_write_json, atomic_write_text, seed_everything

__all__ = [
    "SPACES", "BASELINES", "TuneConfig", "TuneResult", "hyperparam_tuning", "settings_from_params",
    "suggest_params", "quick_tune_config", "open_storage", "export_study",
]

logger = logging.getLogger(__name__)

SPACES = ("plain", "variant")
PLAIN_BATCHES = (16, 32, 64, 128, 256)
VARIANT_BATCHES = (32, 64, 128, 256)
# Hand recipes enqueued as trial 0 of a fresh study (epochs filled in from the config).
BASELINES: dict[str, dict[str, Any]] = {
    "plain": {"hidden_layers": 4, "units": 50, "lr": 0.02, "batch_size": 64, "l2": 5e-4, "momentum": 0.9},
    "variant": {"hidden_layers": 2, "units": 256, "activation": "relu", "batchnorm": True, "dropout": 0.2,
                "lr": 0.05, "batch_size": 128, "l2": 5e-4, "momentum": 0.9},
}
_MODEL_KEYS = ("hidden_layers", "units", "activation", "batchnorm", "dropout")
_TRAIN_KEYS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "l2", "schedule")


@dataclass(frozen=True)
class TuneConfig:
    """Settings of one tuning study.

    Args:
        space: ``plain`` or ``variant`` (see the module docstring).
        n_trials: trials to have COMPLETE or PRUNED in the study when done (resumes count).
        max_train: each trial trains on a stratified subset of this many of the 50,000 training
            examples (None: all of them); the validation part is always whole.
        val_size: validation examples forked from the 60,000 training images.
        epochs: the epoch counts the search chooses from.
        pruner: ``median`` (MedianPruner), ``halving`` (SuccessiveHalvingPruner) or ``none``.
        workers: local processes on the study (1: in this process, reproducible).
        storage: an SQLAlchemy URL; None: ``sqlite:///<out_dir>/study.db``.
        study_name: None: ``fashionlab-<space>``.
        seed: TPE seed (worker i uses seed + 7919 i); trial k trains with seed ``seed + k``.
        schedule: the learning-rate schedule of every trial (``cosine`` or ``constant``).
        timeout_s: no new trial starts after this many seconds (None: no limit).
        threads: torch CPU threads per worker (None: leave torch's setting).
        heartbeat_s: how often a running trial says it is alive; silent for twice that, it is stale.
        device: where trials train.
    """

    space: str = "plain"
    n_trials: int = 24
    max_train: int | None = 20_000
    val_size: int = 10_000
    epochs: tuple[int, ...] = (3, 6, 9)
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
        if not _is_int(self.n_trials) or self.n_trials < 1:
            raise ConfigError(f"n_trials must be an integer >= 1, got {self.n_trials!r}")
        if self.max_train is not None and (not _is_int(self.max_train) or self.max_train < 1):
            raise ConfigError(f"max_train must be None or an integer >= 1, got {self.max_train!r}")
        if self.max_train is not None and self.max_train < max(self.batch_choices):
            raise ConfigError(f"max_train {self.max_train} is smaller than the largest batch size "
                              f"{max(self.batch_choices)} of the {self.space} space; use max_train >= "
                              f"{max(self.batch_choices)}")
        if not _is_int(self.val_size) or not 0 < self.val_size < 60_000:
            raise ConfigError(f"val_size must be an integer in 1..59999, got {self.val_size!r}")
        object.__setattr__(self, "epochs", tuple(self.epochs))
        if not self.epochs or any(not _is_int(e) or e < 1 for e in self.epochs):
            raise ConfigError(f"epochs must be a non-empty list of integers >= 1, got {self.epochs!r}")
        if self.pruner not in ("median", "halving", "none"):
            raise ConfigError(f"pruner must be median, halving or none, got {self.pruner!r}")
        if not _is_int(self.workers) or self.workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {self.workers!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be None or > 0, got {self.timeout_s!r}")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise ConfigError(f"threads must be None or an integer >= 1, got {self.threads!r}")
        if not _is_int(self.heartbeat_s) or self.heartbeat_s < 1:
            raise ConfigError(f"heartbeat_s must be an integer >= 1, got {self.heartbeat_s!r}")
        if self.study_name is not None and not str(self.study_name).strip():
            raise ConfigError("study_name must not be empty; leave it out for fashionlab-<space>")

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
    """A ~20-second study for ``--quick`` runs: 6 trials of 1-2 epochs on 3,000 examples."""
    settings: dict[str, Any] = {"space": space, "n_trials": 6, "max_train": 3000, "epochs": (1, 2)}
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
    seconds: float

    @property
    def best_params(self) -> dict[str, Any]:
        """The full flat setting of the best trial (input of ``classifier.run_classifier``)."""
        return self.best["params"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        params["units"] = trial.suggest_categorical("units", [128, 256, 512])
        params["activation"] = trial.suggest_categorical("activation", ["relu", "leaky_relu", "elu", "prelu"])
        params["batchnorm"] = trial.suggest_categorical("batchnorm", [False, True])
        params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
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
                      progress: bool = False) -> TuneResult:
    """Run (or resume) the Optuna study of ``config.space`` and export its trials.

    Args:
        out_dir: the stage directory (study.db by default, trials.csv, trials.json, best.json).
        config: the study settings (default :class:`TuneConfig`).
        data_dir: the Fashion-MNIST folder (default: the data layer's search order).
        splits: ``(train, val)`` Splits to use instead of ``load_train_val`` (``max_train`` still
            subsets ``train``); for tests and other data.
        progress: a tqdm bar over the trials of this call (single worker only).

    Returns:
        A :class:`TuneResult` whose ``best`` is what best.json holds.

    Raises:
        ConfigError: bad settings, an unusable storage URL, or a study of another space.
        FashionLabError: no trial completed, or a worker failed.
    """
    config = config or TuneConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage_url = config.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    if splits is not None:
        n_train = min(len(splits[0]), config.max_train or len(splits[0]))
        if n_train < max(config.batch_choices):
            raise ConfigError(f"the training split has {n_train} examples, fewer than the largest batch size "
                              f"{max(config.batch_choices)} of the {config.space} space; give more examples")
    with Stopwatch() as watch:
        storage = open_storage(storage_url, config.heartbeat_s)
        study = _create_or_load(storage, storage_url, config)
        done = _count(study)["finished"]
        logger.info("study %s (%s space) in %s: %d of %d trials finished, running the rest with %d worker(s)",
                    config.name, config.space, redact(storage_url), done, config.n_trials, config.workers)
        if config.workers == 1:
            _run_worker(storage_url, config, 0, progress, data_dir, splits, storage)
        else:
            _spawn_workers(storage_url, config, data_dir, splits)
    best = export_study(out_dir, study, config, storage_url, watch.seconds)
    return TuneResult(out_dir, config.name, redact(storage_url), best, best["counts"], watch.seconds)


def _create_or_load(storage, storage_url: str, config: TuneConfig):
    """Create the study (and enqueue the baseline) or load it; refuse a study of another space."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=config.name, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=config.name)
        space = study.user_attrs.get("space")
        if space is not None and space != config.space:
            raise ConfigError(f"study {config.name!r} in {redact(storage_url)} searches the {space!r} space, "
                              f"not {config.space!r}; give another study name or output folder") from None
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ConfigError(f"study {config.name!r} does not maximize; give another study name") from None
        return study
    study.set_user_attr("space", config.space)
    study.set_user_attr("config", config.to_dict() | {"storage": None})
    baseline = dict(BASELINES[config.space], epochs=max(config.epochs))
    study.enqueue_trial(baseline, skip_if_exists=True)
    return study


def _count(study) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    counts["finished"] = counts["complete"] + counts["pruned"]
    return counts


def _spawn_workers(storage_url: str, config: TuneConfig, data_dir, splits) -> None:
    """``config.workers`` spawned processes, each opening the storage and running trials."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(config.workers, mp_context=context) as pool:
        futures = [pool.submit(_run_worker, storage_url, config, index, False, data_dir, splits) for index in range(config.workers)]
        errors = []
        for future in futures:
            try:
                future.result()
            except Exception as exc:  # collect all, report the first
                errors.append(exc)
    if errors:
        if isinstance(errors[0], FashionLabError):
            raise errors[0]
        raise FashionLabError(f"a tuning worker failed: {type(errors[0]).__name__}: {errors[0]}") from errors[0]


def _run_worker(storage_url: str, config: TuneConfig, index: int, progress: bool, data_dir=None,
                splits=None, storage=None) -> int:
    """One worker: load the data, then run trials until the study has ``n_trials`` finished."""
    import optuna
    import torch
    from tqdm.auto import tqdm

    from .data import load_train_val

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage or open_storage(storage_url, config.heartbeat_s)
    study = optuna.load_study(storage=storage, study_name=config.name, sampler=_sampler(config, index),
                              pruner=_pruner(config))
    train, val = splits if splits is not None else load_train_val(config.val_size, seed=config.seed,
                                                                  data_dir=data_dir)
    if config.max_train is not None:
        train = train.subset(config.max_train, seed=config.seed)
    objective = _Objective(train, val, config)
    start, ran = time.monotonic(), 0
    bar = tqdm(total=config.n_trials, initial=_count(study)["finished"], disable=not progress, unit="trial")
    try:
        while True:
            counts = _count(study)
            bar.n = counts["finished"]
            bar.refresh()
            if counts["finished"] >= config.n_trials:
                break
            if config.timeout_s is not None and time.monotonic() - start > config.timeout_s:
                logger.warning("tuning timeout of %gs reached with %d of %d trials finished",
                               config.timeout_s, counts["finished"], config.n_trials)
                break
            if counts["finished"] + counts["running"] >= config.n_trials and counts["waiting"] == 0:
                # The last trials run elsewhere (or in a killed process, until its heartbeat is stale).
                optuna.storages.fail_stale_trials(study)
                time.sleep(min(1.0, config.heartbeat_s))
                continue
            study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
            ran += 1
    finally:
        bar.close()
    return ran


def _sampler(config: TuneConfig, worker: int):
    import optuna

    # Distinct seeds per worker, or every worker would propose the same random start-up trials.
    with warnings.catch_warnings():  # multivariate TPE and constant_liar are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=config.seed + 7919 * worker, n_startup_trials=min(8, config.n_trials),
                                          multivariate=True, constant_liar=config.workers > 1)


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
            if trial.should_prune():
                self._record(trial, accs, losses, diverged=False, step=step, seconds=None)
                raise optuna.TrialPruned(f"val_acc {val_acc:.4f} at {step}% of the schedule")

        seed_everything(train_config.seed)  # the initial weights, too, come from the trial's seed
        model = MLP(**model_config)
        result = fit(model, self.train, train_config, val=self.val, device=self.config.device, on_epoch=on_epoch)
        self._record(trial, accs, losses, result.diverged, step=100 if not result.diverged else None,
                     seconds=result.seconds)
        if result.diverged:
            logger.info("trial %d diverged (lr=%.3g): recorded with value 0", trial.number, train_config.lr)
            return 0.0
        return float(result.history.val_acc[-1])

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


# --------------------------------------------------------------------------- storage and export

def redact(url: str) -> str:
    """The storage URL with its password hidden (for logs and JSON)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: say nothing secret
        return url.split("@")[-1]


def open_storage(url: str, heartbeat_s: int = 10):
    """An Optuna RDB storage for ``url`` with a heartbeat (stale trials fail and are retried once).

    ``postgresql://`` is sent as ``postgresql+psycopg://`` (psycopg 3, the ``postgres`` extra).

    Raises:
        ConfigError: a malformed URL, a missing database driver, or a database that cannot be reached.
    """
    import optuna
    import sqlalchemy.exc

    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # Several processes write one file: wait for the lock instead of failing after 5 s.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    for attempt in range(4):
        try:
            with warnings.catch_warnings():  # Optuna flags heartbeats as experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", FutureWarning)
                if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
                    retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(1)}
                else:
                    retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                     heartbeat_interval=heartbeat_s, **retry)
            break
        except ModuleNotFoundError as exc:
            raise ConfigError(f"storage {redact(url)} needs the Python module {exc.name!r}; for PostgreSQL run "
                              f"`pip install 'fashionlab[postgres]'`") from exc
        except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
            raise ConfigError(f"storage URL {redact(url)!r} is not valid ({exc}); expected e.g. "
                              f"sqlite:///runs/x/tune/study.db or postgresql://user:pw@host/db") from exc
        except sqlalchemy.exc.DBAPIError as exc:
            # Workers started together race to create the tables; the loser retries and finds them.
            first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
            if attempt == 3 or isinstance(exc, sqlalchemy.exc.InterfaceError):
                raise ConfigError(f"cannot open storage {redact(url)} ({first}); check that the database exists "
                                  f"and the server runs") from exc
            logger.debug("opening %s failed (%s); retrying", redact(url), first)
            time.sleep(0.5 * (attempt + 1))
    if url.startswith("sqlite"):
        _write_ahead_log(storage.engine)
    return storage


def _write_ahead_log(engine) -> None:
    """SQLite in WAL mode with synchronous=NORMAL: a commit is a write to the log, not an fsync.

    A committed trial survives a killed process (the log is in the OS page cache); only a power
    cut could drop the last commits. This makes the ~30 commits of a trial ~20x cheaper.
    """
    from sqlalchemy import event

    def pragmas(connection, record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while Optuna created the tables reconnect with the pragmas


_CSV_BASE = ("number", "state", "value", "val_acc", "val_loss", "diverged", "epochs_run", "last_step",
             "duration_s", "datetime_start", "datetime_complete")


def _trial_record(trial) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number, "state": trial.state.name, "value": trial.value, "params": dict(trial.params),
        "user_attrs": dict(trial.user_attrs), "duration_s": duration,
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
    }


def _csv_text(records: list[dict[str, Any]]) -> str:
    import csv
    import io

    names = sorted({name for record in records for name in record["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(_CSV_BASE) + [f"param_{name}" for name in names])
    for record in records:
        attrs = record["user_attrs"]
        row = [record["number"], record["state"], record["value"], attrs.get("val_acc"), attrs.get("val_loss"),
               attrs.get("diverged"), attrs.get("epochs_run"), attrs.get("last_step"), record["duration_s"],
               record["datetime_start"], record["datetime_complete"]]
        writer.writerow(["" if v is None else v for v in row] + [record["params"].get(n, "") for n in names])
    return buffer.getvalue()


def export_study(out_dir: str | os.PathLike[str], study, config: TuneConfig, storage_url: str,
                 seconds: float = 0.0) -> dict[str, Any]:
    """Write trials.csv, trials.json and best.json (atomically) from the storage; return best.json's dict.

    Raises:
        FashionLabError: the study has no COMPLETE trial yet.
    """
    out_dir = Path(out_dir)
    trials = study.get_trials(deepcopy=False)
    records = [_trial_record(t) for t in sorted(trials, key=lambda t: t.number)]
    header = {"schema_version": 1, "study": study.study_name, "space": config.space,
              "storage": redact(storage_url), "direction": "maximize"}
    atomic_write_text(out_dir / "trials.csv", _csv_text(records))
    atomic_write_json(out_dir / "trials.json", header | {"trials": records})
    counts = _count(study)
    try:
        best_trial = study.best_trial
    except ValueError:
        raise FashionLabError(f"study {study.study_name!r} has no completed trial ({counts}); "
                              f"run more trials (see {out_dir / 'trials.csv'})") from None
    fixed = {"nesterov": False, "schedule": config.schedule}
    if config.space == "plain":
        fixed |= {"activation": "relu", "batchnorm": False, "dropout": 0.0}
    params = fixed | dict(best_trial.params)
    model_config, train_config = settings_from_params(params, seed=config.seed)
    attrs = best_trial.user_attrs
    best = header | {
        "number": best_trial.number, "value": best_trial.value, "val_acc": attrs.get("val_acc", best_trial.value),
        "val_loss": attrs.get("val_loss"), "searched": dict(best_trial.params), "params": params,
        "model": model_config, "train": train_config.to_dict(), "counts": counts,
        "train_examples": attrs.get("train_examples"), "val_examples": attrs.get("val_examples"),
        "config": config.to_dict() | {"storage": redact(storage_url)}, "seconds": seconds,
    }
    best.pop("direction")
    atomic_write_json(out_dir / "best.json", best)
    return best
