"""The user cache folder and whether a folder can be written (no torch: the CLI uses it first)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache", "writable_folder"]


def user_cache() -> Path:
    """``$XDG_CACHE_HOME/fashionlab`` or ``~/.cache/fashionlab``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fashionlab"


def writable_folder(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or written (its nearest existing part is not a writable
    folder), or None if it can. Writes nothing."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
