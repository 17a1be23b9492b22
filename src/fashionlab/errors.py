"""Exceptions that the CLI turns into one line on stderr and a non-zero exit."""

from __future__ import annotations

import errno as _errno
import os
import sqlite3
import sys

__all__ = [
    "FashionLabError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "StorageError",
    "BrokenFileError",
    "FolderInUseError",
    "FolderNotOursError",
    "describe_os_error",
    "database_error_cause",
]


class FashionLabError(Exception):
    """Base class of every error that is the user's to fix (bad input, missing data).

    ``message`` says what is wrong (with the bad value and what was expected), ``fix`` what to
    do; ``str()`` joins them as ``message; fix: fix`` for the one error line of the CLI. Code
    that needs one part reads the attribute, never the text.
    """

    def __init__(self, message: str = "", *args: object, fix: str | None = None) -> None:
        super().__init__(message, *args)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}; fix: {self.fix}" if self.fix else text


class DataError(FashionLabError):
    """A Fashion-MNIST file is missing, unreadable, corrupt or cannot be downloaded."""


class ConfigError(FashionLabError, ValueError):
    """An impossible setting (hyperparameter, option) refused before any work starts."""


class CheckpointError(FashionLabError):
    """A checkpoint that cannot be read or belongs to another model."""


class StorageError(FashionLabError, OSError):
    """A file, folder or database that cannot be read or written: disk full, read-only, gone.

    ``str()`` names the path and the cause in words, e.g.
    ``cannot write runs/x/run.json: no space left on device``. It is an ``OSError`` too (with
    the original ``errno`` where there was one), so code that handles OS errors still does.
    """

    def __init__(
        self, path: object, cause: str, action: str = "write", errno: int | None = None
    ) -> None:
        OSError.__init__(self, errno, cause, str(path))
        self.path, self.cause, self.action = path, cause, action

    def __str__(self) -> str:
        return f"cannot {self.action} {self.path}: {self.cause}"

    def __reduce__(self) -> tuple[object, ...]:  # pickles across worker processes
        return type(self), (self.path, self.cause, self.action, self.errno)


class BrokenFileError(FashionLabError, ValueError):
    """A file of a run folder that cannot be parsed (cut short by a crash, edited by hand).

    A ``ValueError`` too, so that code which treats an unreadable record as absent still does.
    """

    def __init__(self, path: object, cause: str, fix: str | None = None) -> None:
        default = (
            "run `fashionlab run` on this folder again (a stage whose output is broken runs "
            "again), or restore the file"
        )
        super().__init__(f"{path} is broken: {cause}", fix=fix or default)
        self.path, self.cause = path, cause

    def __reduce__(self) -> tuple[object, ...]:  # pickles across worker processes
        return type(self), (self.path, self.cause, self.fix)


class FolderInUseError(FashionLabError):
    """Another process holds the lock on a run folder."""


class FolderNotOursError(FashionLabError):
    """A folder given as a run folder holds files that fashionlab did not write."""


# errno -> the words of an error line; anything else gets the C library's own text.
_ERRNO_WORDS = {
    _errno.ENOSPC: "no space left on device",
    _errno.EDQUOT: "disk quota exceeded",
    _errno.EROFS: "read-only file system",
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.ENOENT: "no such file or folder (was it moved or deleted?)",
    _errno.ENOTDIR: "a part of the path is a file, not a folder",
    _errno.EISDIR: "is a folder, not a file",
    _errno.ENAMETOOLONG: "file name too long",
    _errno.EIO: "input/output error (a failing disk or a lost network mount?)",
    _errno.EMFILE: "too many open files",
    _errno.EFBIG: "file too large",
}


def describe_os_error(exc: OSError) -> str:
    """The cause of ``exc`` in a few lower-case words, e.g. ``no space left on device``."""
    if exc.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[exc.errno]
    if isinstance(exc.errno, int):
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def database_error_cause(exc: BaseException) -> str | None:
    """The driver's message if ``exc`` is, or happened while handling, a database error; else None.

    Follows ``__cause__`` and ``__context__``: Optuna hides a failed commit behind its own
    exceptions (see ``fashionlab.experiments.classifier.tuning.storage.database_errors``).
    """
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")  # only if something imported it
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            return _first_line(current)
        if sqlalchemy_exc is not None and isinstance(current, sqlalchemy_exc.DBAPIError):
            return _first_line(current.orig if current.orig is not None else current)
        if sqlalchemy_exc is not None and isinstance(current, sqlalchemy_exc.SQLAlchemyError):
            return _first_line(current)
        current = current.__cause__ or current.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
