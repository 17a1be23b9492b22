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
