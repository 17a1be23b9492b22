"""The study's storage: the Optuna RDB storage (SQLite in WAL mode, or PostgreSQL through
psycopg 3) with a heartbeat, its URL, its errors, and the study created or resumed in it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator
from typing import Any

from ....errors import ConfigError, FashionLabError, StorageError, database_error_cause
from ....redaction import redact_text, redact_url
from ..config import TuneConfig
from ..space import searched_from_setting, searched_keys

__all__ = [
    "sqlite_url",
    "redact",
    "open_storage",
    "database_errors",
    "stale_after_s",
    "count",
    "create_or_load",
]

logger = logging.getLogger(__name__)

# Seconds a heartbeat may be late, beyond twice its interval, before its trial is taken for dead.
LATE_HEARTBEAT_S = 60


def stale_after_s(heartbeat_s: int) -> int:
    """Seconds without a heartbeat after which a trial of another host is failed and retried."""
    return 2 * heartbeat_s + LATE_HEARTBEAT_S


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
    """The storage URL with its password hidden (for logs and JSON); without one, as given.

    The user-info password and secret query values (``?password=``, ``?sslpassword=``) are
    hidden: :func:`fashionlab.redaction.redact_url`, the one home of redaction.
    """
    return redact_url(url)


def open_storage(url: str, heartbeat_s: int = 10):
    """An Optuna RDB storage for ``url`` with a heartbeat (dead trials fail and are retried once).

    ``postgresql://`` is sent as ``postgresql+psycopg://`` (psycopg 3, the ``postgres`` extra).

    Raises:
        ConfigError: a malformed URL, a missing database driver, or a database that cannot be
            reached.
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
                    retry = {
                        "heartbeat_stale_trial_callback": (
                            optuna.storages.RetryHeartbeatStaleTrialCallback(1)
                        )
                    }
                else:
                    retry = {
                        "failed_trial_callback": optuna.storages.RetryFailedTrialCallback(
                            max_retry=1
                        )
                    }
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_s,
                    grace_period=stale_after_s(heartbeat_s),
                    **retry,
                )
            break
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"storage {redact(url)} needs the Python module {exc.name!r}; for PostgreSQL run "
                f"`pip install 'fashionlab[postgres]'`"
            ) from exc
        except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
            raise ConfigError(
                f"storage URL {redact(url)!r} is not valid ({redact_text(str(exc))}); expected "
                f"e.g. sqlite:///runs/x/tune/study.db or postgresql://user@host/db"
            ) from exc
        except sqlalchemy.exc.DBAPIError as exc:
            # Workers started together race to create the tables; the loser retries and finds them.
            first = redact_text(
                str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
            )
            # sqlite3.DatabaseError itself (not a subclass: locked, cannot open): a damaged file.
            if type(exc.orig) is sqlite3.DatabaseError:
                raise StorageError(
                    _database_name(url),
                    f"{first} (cut short or damaged?); move it away, or redo the stage with "
                    f"`fashionlab run --force STAGE` (it keeps the old folder)",
                    "open the tuning database",
                ) from exc
            if attempt == 3 or isinstance(exc, sqlalchemy.exc.InterfaceError):
                raise ConfigError(
                    f"cannot open storage {redact(url)} ({first}); check that the database exists "
                    f"and the server runs"
                ) from exc
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
    """SQLite in WAL mode with synchronous=NORMAL, every transaction begun IMMEDIATE.

    WAL with synchronous=NORMAL: a commit is a write to the log, not an fsync. A committed trial
    survives a killed process (the log is in the OS page cache); only a power cut could drop the
    last commits (sqlite.org/pragma.html#pragma_synchronous: WAL with NORMAL syncs only at
    checkpoints and stays consistent). A trial commits at every rung and heartbeat, so its
    commits cost no fsync each.

    BEGIN IMMEDIATE: Optuna changes a trial's state by reading it and then writing it in one
    transaction (``set_trial_state_values``: refuse a finished trial; ``ask``: take a WAITING
    trial only if it still waits), and relies on ``SELECT ... FOR UPDATE`` to keep another
    process out in between (optuna/optuna#1014). SQLite ignores FOR UPDATE, and Python's sqlite3
    begins a transaction only at its first write, so two processes could both read RUNNING and
    both fail the trial: two retries of one setting (two local workers reaping the same dead
    trial), or both take one enqueued trial (optuna/optuna#4621).
    Begun IMMEDIATE, a transaction holds the database's write lock from its first read, so the
    read and the write are one step: the second process waits (the busy timeout) and then reads
    the first one's result. PostgreSQL gets the same from FOR UPDATE.
    """
    from sqlalchemy import event

    def pragmas(connection, record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        connection.isolation_level = None  # sqlite3 begins nothing itself; SQLAlchemy does:

    def begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", pragmas)
    event.listen(engine, "begin", begin_immediate)
    # connections opened while Optuna created the tables reconnect with the pragmas
    engine.dispose()


# --------------------------------------------------------------------------- the study


def create_or_load(storage, storage_url: str, config: TuneConfig):
    """Create the study (and enqueue ``config.enqueue``, nothing by default) or load it; refuse a
    study of another space or of other trial settings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial replaces Optuna's
    try:
        study = optuna.create_study(storage=storage, study_name=config.name, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=config.name)
        space = study.user_attrs.get("space")
        if space is not None and space != config.space:
            raise ConfigError(
                f"study {config.name!r} in {redact(storage_url)} searches the {space!r} space, "
                f"not {config.space!r}; give another study name or output folder"
            ) from None
        saved = dict(study.user_attrs.get("config") or {})
        if saved and "searched" not in saved:  # made before the effective rate was searched
            saved["searched"] = [
                "lr" if key == "effective_lr" else key for key in searched_keys(config.space)
            ]
        changed = {
            key: (saved[key], value)
            for key, value in _objective_fields(config).items()
            if key in saved and saved[key] != value
        }
        if changed:
            described = ", ".join(
                f"{key} {old} (asked: {new})" for key, (old, new) in changed.items()
            )
            raise ConfigError(
                f"study {config.name!r} in {redact(storage_url)} was made with {described}; its "
                "trial values would not be comparable. Resume with the same settings, or give "
                f"another study name or output folder"
            ) from None
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise ConfigError(
                f"study {config.name!r} does not maximize; give another study name"
            ) from None
        return study
    study.set_user_attr("space", config.space)
    study.set_user_attr("config", _objective_fields(config))
    for setting in config.enqueue:
        study.enqueue_trial(searched_from_setting(setting), skip_if_exists=True)
    return study


def _objective_fields(config: TuneConfig) -> dict[str, Any]:
    """The settings that define what a trial value means; a resumed study must keep them."""
    return {
        "space": config.space,
        "searched": list(searched_keys(config.space)),
        "epochs": list(config.epochs),
        "max_train": config.max_train,
        "val_size": config.val_size,
        "seed": config.seed,
        "schedule": "wsd",
        "decay": config.decay,
    }


def count(study) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    counts["finished"] = counts["complete"] + counts["pruned"]
    return counts
