"""CLI subcommands: one module per subcommand, each with ``register(subparsers, common)``.

Modules import torch and the library lazily inside their handlers, so ``fashionlab --help``
stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMANDS = ("run", "data", "heinit", "tune", "train", "landscape", "autoencoder", "report")

DEFAULT_RUN_DIR = Path("runs") / "default"


def run_dir(args: argparse.Namespace) -> Path:
    """The run directory: ``--out`` or ``runs/default``."""
    return Path(args.out) if getattr(args, "out", None) else DEFAULT_RUN_DIR


def stage_dir(args: argparse.Namespace, stage: str) -> Path:
    """``<run dir>/<stage>``: where a stage run on its own writes its files."""
    return run_dir(args) / stage


def count_or_all(text: str) -> int | None:
    """argparse type of a count of examples: an integer, or ``all`` (None).

    0 and negative numbers pass through, so that the config dataclass refuses them with the one
    error line every command and config file shares (0 never means "all").
    """
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        message = f"expected a positive integer or 'all', got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
