"""``fashionlab`` command line: parses argv, sets up logging, turns library errors into one line."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import multiprocessing
import signal
import sys
from collections.abc import Sequence

from . import __version__, _interrupts
from .commands import COMMANDS

__all__ = ["main", "build_parser"]


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--device",
        default="auto",
        help="auto | cpu | cuda | cuda:N (default: auto = CUDA if present)",
    )
    group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    group.add_argument("--out", default=None, help="run directory (default: runs/default)")
    group.add_argument(
        "--data-dir",
        default=None,
        help="folder with the Fashion-MNIST files (default: $FASHIONLAB_DATA, the cache, "
        "the Debian package, then a download)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    group.add_argument(
        "--wait",
        action="store_true",
        help="if another fashionlab process writes into the run directory, wait "
        "for it (default: stop with an error)",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashionlab",
        description="A reproducible deep-learning lab on Fashion-MNIST: He init, MLP tuning, "
        "loss landscape, autoencoder, one PDF report.",
    )
    parser.add_argument("--version", action="version", version=f"fashionlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common_options()
    for name in COMMANDS:
        module_name = f"fashionlab.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fashionlab`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
        stream=sys.stderr,
    )
    from .redaction import RedactingFilter

    for handler in logging.getLogger().handlers:  # no password of a storage URL in a log line
        handler.addFilter(RedactingFilter())
    # Third-party chatter (optuna logs every trial itself) stays at warning level.
    logging.getLogger("optuna").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    with _interrupts.handling():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .errors import FashionLabError, database_error_cause, describe_os_error
    from .redaction import redact_text

    try:
        device = getattr(args, "device", "auto")
        if device not in ("auto", "cpu"):
            # Refuse an impossible --device (cuda without CUDA, a typo) before any work starts,
            # whatever the subcommand; torch is imported only for these values.
            from .utils import resolve_device

            resolve_device(device)
        code = int(args.func(args) or 0)
        _interrupts.check()  # an interrupt a finaliser swallowed after the last step boundary
        return code
    except FashionLabError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # one the library did not turn into a StorageError where it happened
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {redact_text(where + describe_os_error(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        cause = database_error_cause(exc)  # a database error that escaped the tuning storage
        if cause is None:
            raise
        print(f"error: database error: {redact_text(str(cause))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        return _interrupted(_interrupts.signal_number(exc))


def _interrupted(signum: int) -> int:
    """One ``interrupted`` line; no child left running; exit 128 + the signal's number."""
    for name in ("SIGINT", "SIGTERM"):  # a second Ctrl-C must not interrupt the cleanup
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    print("interrupted", file=sys.stderr)
    # The library stops its children on the way out; a child left by a cut-short cleanup would
    # be waited for at exit by multiprocessing, so it is ended here (each dies with us anyway).
    for child in multiprocessing.active_children():
        child.kill()
        child.join(5)
    return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
