"""What :mod:`fashionlab.pipeline` checks and moves in a run folder (private; see its docstring).

The size and sha256 of a stage's output files, the check of those against what ``stage.json``
recorded, and moving a stage's folder aside without deleting an older one (the one mechanism,
:func:`fashionlab.locks.move_aside`, that also keeps a foreign folder's files).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import StorageError, describe_os_error

STAGE_FILE = "stage.json"

# Not outputs: the marker itself, and SQLite files, which are working state (the tuning study)
# whose bytes change whenever the database is opened; the study's results are its exports.
_SQLITE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".sqlite3")


def _is_output(path: Path) -> bool:
    name = path.name
    return name != STAGE_FILE and not name.startswith(".") and not name.endswith(_SQLITE_SUFFIXES)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def record_outputs(
    run_dir: Path, stage_dir: Path, extra: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """``{path relative to run_dir: {"size", "sha256"}}`` of every output file of one stage.

    The outputs are the files under ``stage_dir`` (recursively, see ``_is_output``) and the
    ``extra`` paths (relative to ``run_dir``) that the stage writes outside its folder.
    """
    files = sorted(p for p in stage_dir.rglob("*") if p.is_file() and _is_output(p))
    files += [run_dir / name for name in extra if (run_dir / name).is_file()]
    outputs = {}
    for path in files:
        try:
            meta = {"size": path.stat().st_size, "sha256": _sha256(path)}
            outputs[path.relative_to(run_dir).as_posix()] = meta
        except OSError as exc:
            raise StorageError(path, describe_os_error(exc), "read", exc.errno) from exc
    return outputs


def check_outputs(run_dir: Path, recorded: dict[str, dict[str, Any]]) -> str | None:
    """Why the files under ``run_dir`` are not what ``recorded`` says, or None if they are.

    Sizes are compared first (one ``stat`` per file); files are hashed only when every size
    matches.
    """
    for name, meta in recorded.items():
        try:
            size = (run_dir / name).stat().st_size
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as exc:
            raise StorageError(run_dir / name, describe_os_error(exc), "read", exc.errno) from exc
        if size != meta["size"]:
            return f"{name} has changed ({size} bytes, {meta['size']} when the stage wrote it)"
    for name, meta in recorded.items():
        try:
            digest = _sha256(run_dir / name)
        except OSError as exc:
            raise StorageError(run_dir / name, describe_os_error(exc), "read", exc.errno) from exc
        if digest != meta["sha256"]:
            return f"{name} has changed (its sha256 differs from the one the stage recorded)"
    return None


def broken_database(stage_dir: Path) -> str | None:
    """Why an SQLite file under ``stage_dir`` cannot be used (cut short, not a database), or None.

    SQLite files are not outputs (their bytes change when opened), so they are checked here
    instead: opened read-only, ``PRAGMA quick_check`` reads every page.
    """
    if not stage_dir.is_dir():
        return None
    for path in sorted(stage_dir.rglob("*")):
        if not path.name.endswith((".db", ".sqlite", ".sqlite3")) or not path.is_file():
            continue
        try:
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                connection.close()
        except sqlite3.Error as exc:
            verdict = str(exc)
        if verdict != "ok":
            relative = path.relative_to(stage_dir.parent).as_posix()
            return f"{relative} is not a usable SQLite database ({verdict}; cut short?)"
    return None


def describe_change(old: dict[str, Any] | None, new: dict[str, Any], limit: int = 3) -> str:
    """The settings that differ between two resolved stage configs, e.g. ``seed 0 (asked: 1)``."""
    if old is None:
        return "settings not recorded"
    new = json.loads(json.dumps(new, default=str))  # as recorded: tuples are lists
    keys = sorted(set(old) | set(new))
    changed = [
        f"{key} {old.get(key)!r} (asked: {new.get(key)!r})"
        for key in keys
        if old.get(key) != new.get(key)
    ]
    if not changed:
        return "its own settings are the same; a stage it depends on changed"
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more
