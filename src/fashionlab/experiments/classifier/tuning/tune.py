"""``hyperparam_tuning``: run (or resume) the Optuna study of a search space and export it."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....atomic import atomic_write_json
from ....data import load_train_val
from ....errors import ConfigError
from ....runtime import Stopwatch
from ....threads import torch_threads
from ..config import TuneConfig
from .export import export_study
from .figures import plot_tuning
from .reference import train_reference
from .storage import count, create_or_load, database_errors, open_storage, redact, sqlite_url
from .workers import run_worker, spawn_workers

__all__ = ["TuneResult", "hyperparam_tuning"]

logger = logging.getLogger(__name__)


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
    reference: dict[str, Any] | None = None  # reference.json (TuneConfig.reference)

    @property
    def best_params(self) -> dict[str, Any]:
        """The full flat setting of the pick, its ``epochs`` the rung it was picked at (input of
        ``classifier.run_classifier``)."""
        return self.best["params"]


def hyperparam_tuning(
    out_dir: str | os.PathLike[str],
    config: TuneConfig | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    splits: tuple[Any, Any] | None = None,
    progress: bool = False,
    clock: Callable[[], float] = time.monotonic,
    on_trial_start: Callable[[Any], None] | None = None,
) -> TuneResult:
    """Run (or resume) the Optuna study of ``config.space``, export its trials and train the
    reference row.

    Args:
        out_dir: the stage directory (study.db by default, trials.csv, trials.json, best.json,
            reference.json; trunks/ holds the trunks of running trials).
        config: the study settings (default :class:`TuneConfig`).
        data_dir: the Fashion-MNIST folder (default: the data layer's search order).
        splits: ``(train, val)`` Splits to use instead of ``load_train_val`` (``max_train`` still
            subsets ``train``); for tests and other data.
        progress: a tqdm bar over the trials of this call (single worker only).
        clock: monotonic seconds; times ``timeout_s`` and how long a RUNNING trial that names no
            owner process may wait before it is taken for dead (``workers=1`` only; for tests).
        on_trial_start: called with each trial once it has named its owner and beaten, before it
            trains (``workers=1`` only; for tests and monitoring).

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
    # The trials of this call are marked with it: a study shared by several run folders says
    # which of them wrote each trial (best.json's ``runs``).
    run = f"{socket.gethostname()}:{out_dir.resolve()}"
    if splits is not None:
        _check_splits(splits, config)
    with Stopwatch() as watch, database_errors(storage_url):
        storage, study = _open_study(storage_url, config)
        trunks = out_dir / "trunks"
        if config.workers == 1:
            ran = run_worker(
                storage_url,
                config,
                progress,
                data_dir,
                splits,
                storage,
                clock,
                on_trial_start,
                trunk_dir=trunks,
                run=run,
            )
        else:
            ran = spawn_workers(storage_url, config, data_dir, splits, study, trunks, run=run)
    best = export_study(out_dir, study, config, storage_url, watch.seconds, run=run)
    plot_tuning(out_dir, study, best)
    reference = _reference(out_dir, config, best, splits, data_dir) if config.reference else None
    return TuneResult(
        out_dir,
        config.name,
        redact(storage_url),
        best,
        best["counts"],
        ran,
        watch.seconds,
        reference,
    )


def _open_study(storage_url: str, config: TuneConfig) -> tuple[Any, Any]:
    """The storage and the study (created, or loaded to resume it)."""
    storage = open_storage(storage_url, config.heartbeat_s)
    study = create_or_load(storage, storage_url, config)
    logger.info(
        "study %s (%s space) in %s: %d of %d trials finished, running the rest with %d worker(s)",
        config.name,
        config.space,
        redact(storage_url),
        count(study)["finished"],
        config.n_trials,
        config.workers,
    )
    return storage, study


def _check_splits(splits: tuple[Any, Any], config: TuneConfig) -> None:
    """Refuse given splits whose training part is smaller than the space's largest batch."""
    n_train = min(len(splits[0]), config.max_train or len(splits[0]))
    if n_train < max(config.batch_choices):
        raise ConfigError(
            f"the training split has {n_train} examples, fewer than the largest batch size "
            f"{max(config.batch_choices)} of the {config.space} space; give more examples"
        )


def _reference(
    out_dir: Path,
    config: TuneConfig,
    best: dict[str, Any],
    splits: tuple[Any, Any] | None,
    data_dir: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """Train the reference row (reference.json) and record the comparison in best.json."""
    train, val = splits or load_train_val(config.val_size, seed=config.seed, data_dir=data_dir)
    if config.max_train is not None:
        train = train.subset(config.max_train, seed=config.seed)
    with torch_threads(config.threads):
        reference = train_reference(out_dir, config, train, val)
    # best.json records the comparison with a person's recipe, whichever wins
    best["reference"] = {key: reference[key] for key in ("params", "epochs", "val_acc", "val_loss")}
    best["beats_reference"] = best["val_acc"] >= reference["val_acc"]
    atomic_write_json(out_dir / "best.json", best)
    return reference
