"""Atomic file writes (a temporary file, then a rename), and the list of temporary files that
lets the next holder of a run folder's lock remove what a killed writer left
(:mod:`fashionlab.locks`)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .errors import BrokenFileError, StorageError, describe_os_error

__all__ = [
    "LOCK_FILE",
    "TEMP_LIST",
    "TEMP_PREFIX",
    "new_temp_file",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "atomic_save_figure",
    "read_json",
]

LOCK_FILE = ".fashionlab.lock"
# The temporary files that writers created in a locked folder (one path a line, relative to the
# folder), so that the next lock holder removes exactly those a killed writer left behind.
TEMP_LIST = ".fashionlab.tmp-files"
# Every temporary file this program makes starts with this prefix (see :func:`new_temp_file`).
TEMP_PREFIX = ".fashionlab-tmp."


# OS errors of the body of ``atomic_path`` that are about the disk (not, say, the network).
_STORAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EIO,
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EFBIG,
    }
)


def new_temp_file(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """Create an empty temporary file (mode 0600) for ``path``, in ``path``'s folder.

    Its name is :data:`TEMP_PREFIX` + ``path``'s name + a random part + ``suffix``. Before it is
    created, its path is added to the temp-file list (:data:`TEMP_LIST`) of the nearest folder
    above it that has a lock file (:func:`lock_folder`), so that the next holder of that lock
    removes it if this process is killed before it is renamed or removed. Outside any such
    folder it is not listed, and nothing ever removes it but its writer.

    Raises:
        OSError: the folder or the file cannot be created, or the list cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}{suffix}")
        _list_temp_file(tmp)  # listed first: a kill between the two leaves no unlisted file
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return tmp


def _list_temp_file(tmp: Path) -> None:
    """Append ``tmp`` to the temp-file list of the nearest locked folder above it, if any."""
    for folder in tmp.parents:
        if (folder / LOCK_FILE).is_file():
            line = tmp.relative_to(folder).as_posix() + "\n"
            fd = os.open(folder / TEMP_LIST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())  # one write with O_APPEND: lines never interleave
            finally:
                os.close(fd)
            return


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Whatever was at ``path`` before stays intact if the body raises (disk full, Ctrl-C), and the
    temporary file (:func:`new_temp_file`: ``.fashionlab-tmp.NAME.*.tmp``) is removed; one left
    by a killed process is removed when the next process takes the lock of the folder it is in
    (:func:`lock_folder`). No other file is ever removed.

    Raises:
        StorageError: creating, renaming or (a disk error while) writing failed; it names
            ``path`` and the cause, and is an ``OSError`` with the original errno.
    """
    path = Path(path)
    try:
        tmp_path = new_temp_file(path)
    except OSError as exc:
        raise StorageError(path, describe_os_error(exc), errno=exc.errno) from exc
    try:
        # new_temp_file creates mode 0600: keep the mode of the file we replace, else 0666 minus the
        # umask.
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp_path, mode)
        yield tmp_path
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            raise StorageError(path, describe_os_error(exc), errno=exc.errno) from exc
    except OSError as exc:
        if isinstance(exc, StorageError) or exc.errno not in _STORAGE_ERRNOS:
            _discard(tmp_path)
            raise
        _discard(tmp_path)
        raise StorageError(path, describe_os_error(exc), errno=exc.errno) from exc
    except Exception as exc:
        # Writers such as torch.save report a full disk as a RuntimeError: look at the disk itself
        # (before the partial temp file is removed and frees space again).
        full = _disk_full(path.parent)
        _discard(tmp_path)
        if full:
            cause = describe_os_error(OSError(errno.ENOSPC, ""))
            raise StorageError(path, cause, errno=errno.ENOSPC) from exc
        raise
    except BaseException:
        _discard(tmp_path)
        raise


def _discard(tmp_path: Path) -> None:
    with contextlib.suppress(OSError):
        tmp_path.unlink(missing_ok=True)


def _disk_full(folder: Path) -> bool:
    try:
        usage = os.statvfs(folder)
    except OSError:
        return False
    return usage.f_bavail * usage.f_frsize < 64 * 1024


def _umask() -> int:
    """The process umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(
    path: str | os.PathLike[str], mode: str, write: Callable[[IO[Any]], None]
) -> Path:
    encoding = None if "b" in mode else "utf-8"  # not the locale's: an ASCII locale works too
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file and a rename."""
    return _atomic_write(path, "wb", lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` through a temp file and a rename."""
    return _atomic_write(path, "w", lambda fh: fh.write(text))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.device):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NumPy/torch scalars and arrays allowed)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`atomic_write_json`.

    Raises:
        BrokenFileError: the file is not valid JSON (cut short, edited by hand); a ``ValueError``.
        OSError: it cannot be read.
    """
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BrokenFileError(path, f"not valid JSON ({_json_cause(exc)}; cut short?)") from exc


def _json_cause(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg.lower().removesuffix(' at')} at line {exc.lineno} column {exc.colno}"
    return "not UTF-8 text"


def atomic_save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """``np.savez_compressed`` through a temp file and a rename."""
    return _atomic_write(path, "wb", lambda fh: np.savez_compressed(fh, **arrays))


def atomic_save_figure(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``fig.savefig`` through a temp file; the format comes from ``path``'s suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    kwargs.setdefault("bbox_inches", "tight")
    return _atomic_write(path, "wb", lambda fh: fig.savefig(fh, format=fmt, **kwargs))
