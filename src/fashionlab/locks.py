"""The run-folder lock: one writer per folder, and only in a folder of ours."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .atomic import LOCK_FILE, TEMP_LIST, TEMP_PREFIX, atomic_write_json
from .errors import FolderInUseError, FolderNotOursError, StorageError, describe_os_error
from .redaction import redact_command, redact_text

__all__ = ["MARK_FILE", "lock_folder", "move_aside"]

logger = logging.getLogger(__name__)

# Marks a folder as fashionlab's: written when a lock holder creates the folder, finds it empty,
# finds a run.json of ours (a folder of an older version) or is told to use it (``force``).
MARK_FILE = ".fashionlab.folder"
_CONTROL_FILES = frozenset({LOCK_FILE, MARK_FILE, TEMP_LIST})


@contextlib.contextmanager
def lock_folder(
    folder: str | os.PathLike[str],
    *,
    wait: bool = False,
    force: bool = False,
    replaces: Iterable[str] = (),
    force_flag: str = "--force",
) -> Iterator[Path]:
    """Hold the lock of a run folder: one writer per folder, other processes are refused.

    The lock is an ``fcntl.flock`` on ``<folder>/.fashionlab.lock``, which holds the holder's
    pid, host, command and start time (JSON) for the message others get. The OS releases it when
    the process ends however it ends, so a killed run never leaves a stale lock.

    Only a folder of ours is used: one with the mark :data:`MARK_FILE`, one that holds a
    ``run.json`` of ours (made by an older version), a new one, or one with no file in it but
    these control files. The mark is written when such a folder is first locked. A folder that
    holds other files is refused before anything is written in it, unless ``force`` is true:
    then each of ``replaces`` (the names, relative to the folder, that the holder will write)
    that exists is first moved to ``NAME.previous`` (:func:`move_aside`), and the folder is
    marked as ours.

    Once held, and again when it is released, the temporary files that writers listed in the
    folder's :data:`TEMP_LIST` (:func:`new_temp_file`) and that are still there (a writer was
    killed) are removed, and the list starts anew: a listed path is removed only if it lies
    inside the folder and its name has :data:`TEMP_PREFIX`. No other file is removed. A folder
    that this call had to create, and that holds nothing but these control files when the body
    ends (a run refused before it wrote anything), is removed again.

    The lock file is readable by its owner only (0600), and the command it records has the
    passwords of storage URLs hidden (:func:`fashionlab.redaction.redact_command`).

    Args:
        folder: the run folder (created if needed).
        wait: if another process holds it, wait until it is released instead of failing.
        force: use a folder that holds files fashionlab did not write.
        replaces: what the holder writes in the folder, moved aside first when ``force`` makes
            a folder ours.
        force_flag: the option that sets ``force``, named in the error.

    Yields:
        The lock file's path.

    Raises:
        FolderNotOursError: the folder holds files fashionlab did not write and ``force`` is
            false.
        FolderInUseError: another process holds the lock and ``wait`` is false.
        StorageError: the folder or its lock file cannot be created or written.
    """
    folder = Path(folder)
    lock = folder / LOCK_FILE
    created = _first_missing(folder)
    if not force and _ownership(folder) is None:  # refused before the lock file is made
        raise _not_ours(folder, force_flag)
    fd = _hold(folder, lock, wait)
    try:
        _write_holder(fd, lock)
        _claim(folder, force, replaces, force_flag)
        _remove_temp_files(folder)
        yield lock
    finally:
        _release(fd, lock, created)


def _write_holder(fd: int, lock: Path) -> None:
    """Write who holds ``lock`` (pid, host, command, start time) into it, for others' messages."""
    holder_record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": redact_command(sys.argv),  # no password of a storage URL
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_record) + "\n").encode(), 0)
    except OSError as exc:  # a courtesy to others; the flock is what counts: go on
        logger.debug("cannot write the lock holder to %s (%s)", lock, describe_os_error(exc))


def _release(fd: int, lock: Path, created: Path | None) -> None:
    """Give up ``lock`` (held through ``fd``), cleaning up after the holder; see
    :func:`lock_folder`. ``created``: the folder that taking the lock had to create, if any."""
    _remove_temp_files(lock.parent)  # the holder's writes are over: its list starts anew
    with contextlib.suppress(OSError):  # the next holder writes its own record
        os.ftruncate(fd, 0)
    if created is not None and _holds_only(created, lock):
        # Unlinked while held: a process waiting on this lock file sees that it is gone
        # (``_hold`` compares inodes) and starts over, so there is never a second writer.
        with contextlib.suppress(OSError):
            lock.unlink()
            shutil.rmtree(created)
    os.close(fd)  # releases the flock


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (None: it exists)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _holds_only(top: Path, lock: Path) -> bool:
    """Whether the tree under ``top`` has no file but the control files of ``lock``'s folder."""
    return all(
        path.is_dir() or (path.parent == lock.parent and path.name in _CONTROL_FILES)
        for path in top.rglob("*")
    )


def _hold(folder: Path, lock: Path, wait: bool) -> int:
    """An open descriptor of ``lock`` that holds its flock (see :func:`lock_folder`)."""
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Owner only: the record names the holder's command (passwords hidden in any case).
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            with contextlib.suppress(OSError):  # made by an older version, or by another user
                os.fchmod(fd, 0o600)
        except OSError as exc:
            cause = describe_os_error(exc)
            raise StorageError(folder, cause, "lock the run folder", exc.errno) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(lock)
                if not wait:
                    raise FolderInUseError(
                        f"run folder {folder} is in use by {holder}; wait until "
                        f"it ends, or pass --wait to wait for it"
                    ) from None
                logger.info("run folder %s is in use by %s; waiting until it ends", folder, holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.exists(lock) and os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the folder it had made: take the lock anew


def _lock_holder(lock: Path) -> str:
    """Who holds ``lock``, in words, from the record the holder wrote."""
    try:
        record = json.loads(lock.read_text())
        command = redact_text(str(record["command"]))  # an older version's record may hold one
        return f"pid {record['pid']} on {record['host']} since {record['since']} ({command})"
    except (OSError, ValueError, KeyError, TypeError):  # being written this instant, or foreign
        return "another process"


def _remove_temp_files(folder: Path) -> None:
    """Remove the temporary files listed in ``folder``'s :data:`TEMP_LIST` that are still there
    (left by a killed writer), then the list itself; see :func:`lock_folder`."""
    listed = folder / TEMP_LIST
    try:
        lines = listed.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.warning("cannot read %s (%s)", listed, describe_os_error(exc))
        return
    root = folder.resolve()
    for line in lines:
        relative = Path(line)
        if relative.is_absolute() or ".." in relative.parts:
            continue
        if not relative.name.startswith(TEMP_PREFIX):
            continue
        tmp = folder / relative
        with contextlib.suppress(OSError):
            if tmp.parent.resolve().is_relative_to(root) and tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                logger.debug("removed %s, left by an interrupted write", tmp)
    with contextlib.suppress(OSError):
        listed.unlink()


def _ownership(folder: Path) -> str | None:
    """Why ``folder`` is ours (``mark``, ``new``, ``empty``, ``run.json``), or None: it holds
    files fashionlab did not write."""
    if not folder.exists():
        return "new"
    if (folder / MARK_FILE).is_file():
        return "mark"
    if not folder.is_dir():
        return None
    if _is_our_run_json(folder / "run.json"):
        return "run.json"
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            continue
        if path.parent == folder and path.name in _CONTROL_FILES:
            continue
        if path.name.startswith(TEMP_PREFIX):  # a write of ours under way (the mark, say)
            continue
        return None
    return "empty"


def _is_our_run_json(path: Path) -> bool:
    """Whether ``path`` is a run.json of fashionlab's pipeline (by the keys it always writes)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"stage_hashes", "stage_settings", "config"} <= set(record)


def _not_ours(folder: Path, force_flag: str) -> FolderNotOursError:
    return FolderNotOursError(
        f"{folder} holds files that fashionlab did not write (it has no {MARK_FILE} and no "
        f"run.json of a fashionlab run); nothing was changed",
        fix=f"give an empty or new folder as --out, or pass {force_flag} to use it anyway (every "
        f"file it would replace is kept as NAME.previous)",
    )


def _claim(folder: Path, force: bool, replaces: Iterable[str], force_flag: str) -> None:
    """Check that ``folder`` is ours (with the lock held) and mark it; see :func:`lock_folder`."""
    how = _ownership(folder)
    if how == "mark":
        return
    if how is None:
        if not force:
            raise _not_ours(folder, force_flag)
        for name in replaces:
            if (folder / name).exists() or (folder / name).is_symlink():
                previous = move_aside(folder, name)
                logger.info(
                    "%s holds files fashionlab did not write: moved %s to %s",
                    folder,
                    name,
                    previous,
                )
        how = force_flag
    mark = {"fashionlab": "run folder", "marked": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "as": how}
    atomic_write_json(folder / MARK_FILE, mark)


def move_aside(folder: Path, name: str, extra: Iterable[str] = ()) -> Path:
    """Move ``<folder>/<name>`` (and the ``extra`` files) to ``<folder>/<name>.previous``; return
    it.

    ``extra`` are paths relative to ``folder``, moved into ``<name>.previous/``. An older
    ``<name>.previous`` is kept, renamed to the first free ``<name>.previous.N`` (N = 2, 3, ...):
    nothing is deleted.

    Raises:
        StorageError: a rename failed.
    """
    previous = folder / f"{name}.previous"
    try:
        if previous.exists() or previous.is_symlink():
            number = 2
            while (folder / f"{name}.previous.{number}").exists():
                number += 1
            previous.rename(folder / f"{name}.previous.{number}")
        if (folder / name).exists() or (folder / name).is_symlink():
            (folder / name).rename(previous)
        for relative in extra:
            if (folder / relative).is_file():
                previous.mkdir(exist_ok=True)
                (folder / relative).rename(previous / Path(relative).name)
    except OSError as exc:
        raise StorageError(folder / name, describe_os_error(exc), "move aside", exc.errno) from exc
    return previous
