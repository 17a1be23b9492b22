"""The storage and the worker processes of :mod:`fashionlab.tune` (private; see its docstring).

Opens the Optuna RDB storage (SQLite in WAL mode, or PostgreSQL through psycopg 3) with a
heartbeat, creates or resumes the study, and runs trials in this process or in spawned worker
processes that share the study through the database.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, FashionLabError, StorageError, database_error_cause

if TYPE_CHECKING:
    from .tune import TuneConfig

# The public module's logger: log lines (and their name under -v) are the same as before the split.
logger = logging.getLogger("fashionlab.tune")


# --------------------------------------------------------------------------- storage

def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of the SQLite file ``path`` (made absolute), right for every legal path.

    SQLAlchemy 2 takes the database part of ``sqlite:///...`` up to the first ``?`` (the rest is
    the query) and percent-decodes it; Optuna then calls ``url.format(...)`` on the URL (its
    ``{SCHEMA_VERSION}`` template). So exactly ``%``, ``?``, ``{`` and ``}`` are escaped (``%``
    first); spaces, non-ASCII letters, ``#``, ``@`` and ``:`` stay as they are, readable, since
    neither parser gives them a meaning there.
    """
    text = os.path.abspath(path)
    for char in "%?{}":
        text = text.replace(char, f"%{ord(char):02X}")
    return f"sqlite:///{text}"


def redact(url: str) -> str:
    """The storage URL with its password hidden (for logs and JSON); without one, as given."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        # Re-rendering would percent-encode every space and non-ASCII letter of a file path.
        return url if parsed.password is None else parsed.render_as_string(hide_password=True)
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


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a failure of the database at ``url`` into a :class:`StorageError` (file and cause).

    A commit that fails at the end of a trial (disk full, read-only, locked, corrupt) surfaces
    from ``study.optimize`` as ``AssertionError: Should not reach.``: Optuna's ``_run_trial``
    re-reads the trial in its ``finally`` block, finds it still RUNNING (the write failed) and
    asserts, and the real error (``StorageInternalError`` from SQLAlchemy's
    ``OperationalError``) survives only as the assertion's ``__context__``. Errors are matched
    by the database error in that chain, never by their text.
    """
    # Optuna logs a trial that failed on the database with its traceback: the error line says it.
    optimize_logger = logging.getLogger("optuna.study._optimize")
    quiet = _DropDatabaseFailures()
    optimize_logger.addFilter(quiet)
    try:
        yield
    except FashionLabError:
        raise
    except Exception as exc:
        cause = database_error_cause(exc)
        if cause is None:
            raise
        raise StorageError(_database_name(url), cause, "use the tuning database") from exc
    finally:
        optimize_logger.removeFilter(quiet)


class _DropDatabaseFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and database_error_cause(record.exc_info[1]) is not None)


def _database_name(url: str) -> str:
    """The file of an SQLite URL, else the URL without its password."""
    if url.startswith("sqlite"):
        try:
            from sqlalchemy.engine import make_url

            return make_url(url).database or url
        except Exception:  # not a URL SQLAlchemy understands
            return url
    return redact(url)


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


# --------------------------------------------------------------------------- the study

def _create_or_load(storage, storage_url: str, config: TuneConfig):
    """Create the study (and enqueue the baseline) or load it; refuse a study of another space."""
    import optuna

    from .tune import BASELINES

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial replaces Optuna's
    try:
        study = optuna.create_study(storage=storage, study_name=config.name, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=config.name)
        space = study.user_attrs.get("space")
        if space is not None and space != config.space:
            raise ConfigError(f"study {config.name!r} in {redact(storage_url)} searches the {space!r} space, "
                              f"not {config.space!r}; give another study name or output folder") from None
        saved = study.user_attrs.get("config") or {}
        changed = {key: (saved[key], value) for key, value in _objective_fields(config).items()
                   if key in saved and saved[key] != value}
        if changed:
            described = ", ".join(f"{key} {old} (asked: {new})" for key, (old, new) in changed.items())
            raise ConfigError(f"study {config.name!r} in {redact(storage_url)} was made with {described}; its trial "
                              f"values would not be comparable. Resume with the same settings, or give another "
                              f"study name or output folder") from None
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ConfigError(f"study {config.name!r} does not maximize; give another study name") from None
        return study
    study.set_user_attr("space", config.space)
    study.set_user_attr("config", _objective_fields(config))
    baseline = dict(BASELINES[config.space], epochs=max(config.epochs))
    study.enqueue_trial(baseline, skip_if_exists=True)
    return study


def _objective_fields(config: TuneConfig) -> dict[str, Any]:
    """The settings that define what a trial value means; a resumed study must keep them."""
    return {"space": config.space, "epochs": list(config.epochs), "max_train": config.max_train,
            "val_size": config.val_size, "seed": config.seed, "schedule": config.schedule}


def _count(study) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    counts["finished"] = counts["complete"] + counts["pruned"]
    return counts


# Seconds a RUNNING trial may go without its first heartbeat, on top of twice the heartbeat interval.
ORPHAN_MARGIN_S = 5


def fail_orphaned_trials(study, grace_s: float) -> list[int]:
    """Fail RUNNING trials that never beat and started over ``grace_s`` seconds ago; retry them once.

    Optuna's ``fail_stale_trials`` only judges trials that have a heartbeat row. A process killed
    between creating a trial (``study.ask``) and the first beat of its heartbeat thread leaves a
    trial RUNNING with no heartbeat at all, which Optuna would never fail — and a study waiting for
    its last trials would wait forever. Such a trial is failed here and handed to the storage's
    stale-trial callback (one retry), exactly as a stale one is. Returns the failed trial numbers.
    """
    import copy
    from datetime import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    now = datetime.now()  # Optuna stamps datetime_start with the writer's local naive time
    old = {t._trial_id: t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
           if t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace_s}
    if not old:
        return []
    try:  # which of them ever beat: Optuna keeps that in its RDB tables only (no public API)
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        backend = getattr(storage, "_backend", storage)  # Optuna wraps the RDBStorage in a cache
        with _create_scoped_session(backend.scoped_session) as session:
            beating = {row[0] for row in session.query(models.TrialHeartbeatModel.trial_id)
                       .filter(models.TrialHeartbeatModel.trial_id.in_(list(old)))}
    except (ImportError, AttributeError) as exc:  # another Optuna or storage: leave them to Optuna
        logger.debug("cannot look up heartbeats (%s); orphaned trials are not checked", exc)
        return []
    failed = []
    for trial_id in sorted(set(old) - beating):
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except UpdateFinishedTrialError:  # another worker got there first
            continue
        logger.warning("trial %d was left RUNNING without a heartbeat (its process died as it started); "
                       "marked FAIL and retried", old[trial_id])
    getter = (getattr(storage, "get_heartbeat_stale_trial_callback", None)  # Optuna >= 4.9
              or getattr(storage, "get_failed_trial_callback", None))
    callback = getter() if getter is not None else None
    if callback is not None:
        for trial_id in failed:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return [old[trial_id] for trial_id in failed]


# --------------------------------------------------------------------------- worker processes

def _spawn_workers(storage_url: str, config: TuneConfig, data_dir, splits) -> int:
    """``config.workers`` spawned processes, each opening the storage and running trials."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(config.workers, mp_context=context) as pool:
        level = logging.getLogger("fashionlab").getEffectiveLevel()
        futures = [pool.submit(_child_worker, level, storage_url, config, index, data_dir, splits)
                   for index in range(config.workers)]
        errors, ran = [], 0
        for future in futures:
            try:
                ran += future.result()
            except Exception as exc:  # collect all, report the first
                errors.append(exc)
    if errors:
        if isinstance(errors[0], FashionLabError):
            raise errors[0]
        raise FashionLabError(f"a tuning worker failed: {type(errors[0]).__name__}: {errors[0]}") from errors[0]
    return ran


def _child_worker(level: int, storage_url: str, config: TuneConfig, index: int, data_dir, splits) -> int:
    """Entry point of a spawned worker process: its log lines go to stderr like the parent's."""
    logging.basicConfig(level=level, format=f"[worker {index}] %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    with database_errors(storage_url):  # the parent gets a picklable one-line error, not the chain
        return _run_worker(storage_url, config, False, data_dir, splits)


def _run_worker(storage_url: str, config: TuneConfig, progress: bool, data_dir=None, splits=None,
                storage=None) -> int:
    """One worker: load the data, then run trials until the study has ``n_trials`` finished."""
    import optuna
    import torch
    from tqdm.auto import tqdm

    from .data import load_train_val
    from .tune import _Objective, _pruner, _sampler

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage or open_storage(storage_url, config.heartbeat_s)
    study = optuna.load_study(storage=storage, study_name=config.name, sampler=_sampler(config),
                              pruner=_pruner(config))
    train, val = splits if splits is not None else load_train_val(config.val_size, seed=config.seed,
                                                                  data_dir=data_dir)
    if config.max_train is not None:
        train = train.subset(config.max_train, seed=config.seed)
    objective = _Objective(train, val, config)
    start, ran = time.monotonic(), 0
    bar = tqdm(total=config.n_trials, initial=_count(study)["finished"], disable=not progress, unit="trial")
    # One line per trial (below) instead of one per epoch of every trial; -v keeps the epoch lines.
    train_logger = logging.getLogger("fashionlab.train")
    train_level = train_logger.level
    if train_logger.getEffectiveLevel() == logging.INFO:
        train_logger.setLevel(logging.WARNING)
    try:
        while True:
            # Optuna fails stale trials before each trial it runs; trials that never beat are ours to fail.
            fail_orphaned_trials(study, 2 * config.heartbeat_s + ORPHAN_MARGIN_S)
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
                with warnings.catch_warnings():  # "experimental" in Optuna
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                time.sleep(min(1.0, config.heartbeat_s))
                continue
            study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
            ran += 1
    finally:
        train_logger.setLevel(train_level)
        bar.close()
    return ran
