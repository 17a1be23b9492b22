"""CLI subcommands: one module per subcommand, each with ``register(subparsers, common)``.

Modules import torch and the library lazily inside their handlers, so ``fashionlab --help``
stays fast.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

COMMANDS = ("run", "data", "heinit", "tune", "train", "landscape", "autoencoder", "report")

DEFAULT_RUN_DIR = Path("runs") / "default"


def run_dir(args: argparse.Namespace) -> Path:
    """The run directory: ``--out`` or ``runs/default``."""
    return Path(args.out) if getattr(args, "out", None) else DEFAULT_RUN_DIR


def stage_dir(args: argparse.Namespace, stage: str) -> Path:
    """``<run dir>/<stage>``: where a stage run on its own writes its files."""
    return run_dir(args) / stage


Handler = Callable[[argparse.Namespace], int]


def writes_run_dir(handler: Handler) -> Handler:
    """``handler`` run while holding the lock of its run directory (one writer per folder)."""

    @functools.wraps(handler)
    def locked(args: argparse.Namespace) -> int:
        from fashionlab.utils import lock_folder

        with lock_folder(run_dir(args), wait=args.wait):
            return handler(args)

    return locked
