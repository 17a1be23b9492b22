"""``fashionlab data verify`` and ``fashionlab data import``: check the four files of a source,
and copy a folder's files (IDX, or the course's .npy) into the cache as verified IDX files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import data
from .atomic import atomic_write_bytes
from .data import DataSource
from .errors import DataError

__all__ = ["FileStatus", "verify", "import_files"]


@dataclass(frozen=True)
class FileStatus:
    """One row of ``fashionlab data verify``."""

    key: str
    path: Path | None
    ok: bool
    sha256: str | None
    message: str


def verify(data_dir: str | os.PathLike[str] | None = None) -> tuple[DataSource, list[FileStatus]]:
    """Verify the four files of the source :func:`data.find_source` picks (no download)."""
    source = data.find_source(data_dir, "all", allow_download=False)
    rows = []
    for key, spec in data.FILES.items():
        path = data.file_in(source.path, spec)
        try:
            raw = data.file_content(path, spec) if path else b""
            data.parse_idx(
                raw, spec, path or source.path / spec.name
            )  # passes only if sha256 == spec.sha256
            rows.append(FileStatus(key, path, True, spec.sha256, "OK"))
        except DataError as exc:
            rows.append(FileStatus(key, path, False, None, exc.message))
    return source, rows


def import_files(
    folder: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None
) -> Path:
    """Copy the four files of ``folder`` into ``dest`` as verified, decompressed IDX files.

    For the course's ``fashion_mnist_*.npy`` files (converted) or any IDX files. All four are
    verified before any is written; each is written atomically as plain ``NAME``, which later
    loads take before a gzipped or .npy copy in the same folder.

    Args:
        folder: a folder with the four files.
        dest: where to write (default: the user cache).

    Returns:
        ``dest``.

    Raises:
        DataError: ``folder`` lacks a file or one fails verification (naming it), or ``dest``
            cannot be written.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"data folder {folder} does not exist or is not a folder",
            fix="give the folder that holds the course's four fashion_mnist_*.npy files",
        )
    dest = Path(dest) if dest is not None else data.cache_dir()
    contents = {}
    for key, spec in data.FILES.items():
        path = data.file_in(folder, spec)
        if path is None:
            raise DataError(
                f"{data.missing_name(folder, spec)} is missing",
                fix="give the folder that holds all four files",
            )
        raw = data.file_content(path, spec)
        data.parse_idx(raw, spec, path)
        contents[key] = raw
    for key, raw in contents.items():
        target = dest / data.FILES[key].name
        try:
            dest.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, raw)
        except OSError as exc:
            raise DataError(
                f"cannot write {target} ({exc.strerror or exc})",
                fix="free space or choose another folder with --data-dir",
            ) from exc
    return dest
