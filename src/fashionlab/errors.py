"""Exceptions that the CLI turns into one line on stderr and a non-zero exit."""

from __future__ import annotations

__all__ = ["FashionLabError", "DataError", "ConfigError", "CheckpointError"]


class FashionLabError(Exception):
    """Base class of every error that is the user's to fix (bad input, missing data)."""


class DataError(FashionLabError):
    """A Fashion-MNIST file is missing, unreadable, corrupt or cannot be downloaded."""


class ConfigError(FashionLabError, ValueError):
    """An impossible setting (hyperparameter, option) refused before any work starts."""


class CheckpointError(FashionLabError):
    """A checkpoint that cannot be read or belongs to another model."""
