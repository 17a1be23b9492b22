"""Small shared helpers: seeding, device choice, atomic file writes, the run-folder lock, timing."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import random
import secrets
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .errors import (
    BrokenFileError,
    ConfigError,
    FolderInUseError,
    FolderNotOursError,
    StorageError,
    describe_os_error,
)
from .redaction import redact_command, redact_text
from .validation import check_seed

__all__ = [
    "MATH_PT",
    "PRINT_RC",
    "PRINT_WIDTH_IN",
    "print_style",
    "seed_everything",
    "resolve_device",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npz",
    "atomic_save_figure",
    "save_figure",
    "principal_components",
    "read_json",
    "lock_folder",
    "move_aside",
    "new_temp_file",
    "Stopwatch",
    "torch_threads",
    "eval_mode",
]

logger = logging.getLogger(__name__)

LOCK_FILE = ".fashionlab.lock"
# Marks a folder as fashionlab's: written when a lock holder creates the folder, finds it empty,
# finds a run.json of ours (a folder of an older version) or is told to use it (``force``).
MARK_FILE = ".fashionlab.folder"
# The temporary files that writers created in a locked folder (one path a line, relative to the
# folder), so that the next lock holder removes exactly those a killed writer left behind.
TEMP_LIST = ".fashionlab.tmp-files"
# Every temporary file this program makes starts with this prefix (see :func:`new_temp_file`).
TEMP_PREFIX = ".fashionlab-tmp."
_CONTROL_FILES = frozenset({LOCK_FILE, MARK_FILE, TEMP_LIST})


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer.

    This is the one place seeds are set. Returns a fresh CPU ``torch.Generator`` seeded
    with ``seed`` for callers that want an explicit stream (data shuffling).
    """
    check_seed("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a usable ``torch.device``.

    Raises:
        ConfigError: the device string is malformed or CUDA is asked for but absent.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto"
            )
        try:
            device = torch.device(spec)
        except RuntimeError as exc:
            raise ConfigError(
                f"--device {spec}: not a valid device; expected cuda or cuda:N (N >= 0)"
            ) from exc
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
        return device
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


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


# The report's text width (A4 with 2 cm margins), in inches: the widest a figure is printed. A
# figure drawn at this width (or less) is printed at 100 %, so its font sizes are the printed ones.
PRINT_WIDTH_IN = (210 - 2 * 20) / 25.4

# Font sizes (points) for figures drawn at their printed size: nothing under 7 pt on paper.
PRINT_RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "figure.titlesize": 9,
    "mathtext.fontset": "dejavusans",
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
}


# Text with mathtext sub- or superscripts: mathtext sets them at 70 %, so 10 pt keeps them at 7 pt.
MATH_PT = 10.0


@contextlib.contextmanager
def print_style() -> Iterator[None]:
    """Draw (and save) a figure with :data:`PRINT_RC`; keep the savefig inside the block, since
    matplotlib reads the tick-label sizes when it draws."""
    import matplotlib.pyplot as plt

    with plt.rc_context(PRINT_RC):
        yield


def save_figure(
    fig: Any, stem: str | os.PathLike[str], *, dpi: int = 150, **kwargs: Any
) -> list[Path]:
    """Save ``fig`` as ``stem.png`` (at ``dpi``) and ``stem.pdf``, atomically, then close it.

    The figure is closed even if a write fails, so a failing stage leaks no pyplot figures.
    """
    import matplotlib.pyplot as plt  # only callers that draw pay for pyplot

    stem = Path(stem)
    try:
        return [
            atomic_save_figure(fig, stem.with_suffix(suffix), dpi=dpi, **kwargs)
            for suffix in (".png", ".pdf")
        ]
    finally:
        plt.close(fig)


def principal_components(rows: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-``k`` principal directions of ``rows`` (N, D), by the SVD of the centred rows.

    Each direction's sign makes its largest-magnitude entry positive (deterministic; callers may
    flip them to their own convention).

    Returns:
        ``(directions (k, D), explained_variance (k,), explained_variance_ratio (k,))`` in float64;
        the variance divides by N - 1, and the ratio is 0 where the rows do not vary at all.
    """
    centred = np.asarray(rows, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    _, singular, vh = np.linalg.svd(centred, full_matrices=False)
    directions = vh[:k].copy()
    largest = np.abs(directions).argmax(axis=1)
    directions *= np.sign(directions[np.arange(len(directions)), largest])[:, None]
    variance = singular**2 / max(1, len(centred) - 1)
    total = variance.sum()
    ratio = variance[:k] / total if total > 0 else np.zeros(len(directions))
    return directions, variance[:k], ratio


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
        _claim(folder, force, replaces, force_flag)
        _remove_temp_files(folder)
        yield lock
    finally:
        _remove_temp_files(folder)  # the holder's writes are over: its list starts anew
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


class Stopwatch:
    """Wall-clock timer: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body (or, as a decorator, a function) on ``threads`` intra-op CPU threads.

    The previous setting is restored afterwards; ``None`` leaves torch's setting alone. Small
    tensors gain nothing from extra threads, which only add synchronisation on a busy machine.
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (no dropout, BatchNorm running statistics) for the body.

    The model's previous training flags are restored afterwards, module by module.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
