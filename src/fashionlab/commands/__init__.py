"""CLI subcommands: one module per subcommand, each with ``register(subparsers, common)``.

Modules import torch and the library lazily inside their handlers, so ``fashionlab --help``
stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import operator
from collections.abc import Callable, Sequence
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


def shown_default(value: Any, none: str = "none") -> str:
    """A default as ``--help`` prints it; ``none`` is what None means for that field."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(shown_default(v) for v in value)
    return str(value)


ConfigRef = type | str  # the class, or "module:Class" to import only when --help is printed


def config_class(config: ConfigRef) -> type:
    """The config dataclass ``config`` names."""
    if isinstance(config, str):
        module, name = config.split(":")
        return getattr(importlib.import_module(module), name)
    return config


class LazyText:
    """Text made when --help is printed (set it on an action, name it in the help's ``%(...)s``)."""

    def __init__(self, make: Callable[[], str]) -> None:
        self.make = make

    def __str__(self) -> str:
        return self.make()


class _DefaultNote:
    """The "default: ..." note of an option, made when --help is printed (argparse's ``%``).

    Lazy, so that building the parser imports no config module that pulls in torch. ``path``
    names a field, or a field of a nested config (``train.epochs``).
    """

    def __init__(self, config: ConfigRef, path: str, quick: bool) -> None:
        self.config, self.path, self.quick = config, path, quick

    def __str__(self) -> str:
        config = config_class(self.config)
        *parents, name = self.path.split(".")
        owner: Any = config()
        for parent in parents:
            owner = getattr(owner, parent)
        spec = next(f for f in dataclasses.fields(owner) if f.name == name)
        none = spec.metadata.get("none", "none")  # fields where None means "all" say so
        default = getattr(owner, name)
        note = f"default: {shown_default(default, none)}"
        if self.quick:
            fast = operator.attrgetter(self.path)(config.quick())
            if fast != default:
                note += f"; {shown_default(fast, none)} with --quick"
        return note


def config_option(
    group: Any,
    config: ConfigRef,
    path: str,
    *flags: str,
    help: str,
    quick: bool = False,
    **kwargs: Any,
) -> argparse.Action:
    """An option that fills the field ``path`` of ``config`` (``train.epochs``: a field of a
    nested config). Left out, it is absent from the parsed arguments (the dataclass decides); its
    help ends with the dataclass's default (and the ``--quick`` one where it differs). Absent
    rather than None, since None is a value ("all") of some fields."""
    kwargs.setdefault("dest", path.rsplit(".", 1)[-1])
    action = group.add_argument(
        *flags, default=argparse.SUPPRESS, help=f"{help} (%(config_default)s)", **kwargs
    )
    action.config_default = _DefaultNote(config, path, quick)  # type: ignore[attr-defined]
    return action


def config_values(args: argparse.Namespace, config: ConfigRef) -> dict[str, Any]:
    """The fields of ``config`` that ``args`` gives (options left out are absent)."""
    fields = dataclasses.fields(config_class(config))
    return {f.name: getattr(args, f.name) for f in fields if hasattr(args, f.name)}


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


Handler = Callable[[argparse.Namespace], int]


def force_option(parser: argparse.ArgumentParser) -> None:
    """``--force``: use a run directory that holds files fashionlab did not write."""
    parser.add_argument(
        "--force",
        action="store_true",
        help="use --out even if it holds files fashionlab did not write; each file or folder "
        "this command would replace is kept as NAME.previous",
    )


def writes_run_dir(
    handler: Handler,
    replaces: Callable[[argparse.Namespace], Sequence[str]] | Sequence[str] = (),
) -> Handler:
    """``handler`` run while holding the lock of its run directory (one writer per folder).

    A directory that holds files fashionlab did not write is refused unless ``--force``
    (:func:`force_option`) is given; then ``replaces`` (the names under the run directory the
    handler writes, or a function of the arguments that gives them) are moved aside first.
    """

    @functools.wraps(handler)
    def locked(args: argparse.Namespace) -> int:
        from fashionlab.locks import lock_folder

        writes = replaces(args) if callable(replaces) else replaces
        force = getattr(args, "force", False)
        with lock_folder(run_dir(args), wait=args.wait, force=force, replaces=writes):
            return handler(args)

    return locked
