"""CLI subcommands: one module per subcommand, each with ``register(subparsers, common)``.

Modules import torch and the library lazily inside their handlers, so ``fashionlab --help``
stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

COMMANDS = ("run", "data", "heinit", "tune", "train", "landscape", "autoencoder", "report")

DEFAULT_RUN_DIR = Path("runs") / "default"


def run_dir(args: argparse.Namespace) -> Path:
    """The run directory: ``--out`` or ``runs/default``."""
    return Path(args.out) if getattr(args, "out", None) else DEFAULT_RUN_DIR


def stage_dir(args: argparse.Namespace, stage: str) -> Path:
    """``<run dir>/<stage>``: where a stage run on its own writes its files."""
    return run_dir(args) / stage


def shown_default(value: Any) -> str:
    """A default as ``--help`` prints it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(shown_default(v) for v in value)
    return str(value)


def config_option(group: Any, config: type, field: str, *flags: str, help: str,
                  quick: bool = False, **kwargs: Any) -> argparse.Action:
    """An option that fills ``config.field``: its default is None (the dataclass decides), and
    its help ends with the dataclass's default (and the ``--quick`` one where it differs)."""
    default = next(f.default for f in dataclasses.fields(config) if f.name == field)
    note = f"default: {shown_default(default)}"
    if quick:
        fast = getattr(config.quick(), field)
        if fast != default:
            note += f"; {shown_default(fast)} with --quick"
    kwargs.setdefault("dest", field)
    action = group.add_argument(*flags, default=None, help=f"{help} ({note})", **kwargs)
    action.config_field = (config, field)  # type: ignore[attr-defined]
    return action


def config_values(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The fields of ``config`` that ``args`` gives (options left out are None and skipped)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config)
            if getattr(args, f.name, None) is not None}
