"""``fashionlab`` command line: parses argv, sets up logging, turns library errors into one line."""

from __future__ import annotations

import argparse
import atexit
import codecs
import importlib
import importlib.util
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
    group.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (implied when standard error is not a terminal)",
    )
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


# What an ASCII-only stream (LC_ALL=C) gets instead of the characters the output uses; anything
# else is written as a backslash escape.
_ASCII = {
    "\u2014": "--",  # em dash
    "\u2013": "-",  # en dash
    "\u2212": "-",  # minus sign
    "\u00b1": "+-",
    "\u00d7": "x",
    "\u00b2": "^2",
    "\u00bd": "1/2",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u2260": "!=",
    "\u2248": "~",
    "\u2192": "->",
    "\u2026": "...",
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u03a3": "Sum",
    "\u03c3": "sigma",
    "\u03bc": "mu",
    "\u03b7": "eta",
    "\u2081": "_1",
    "\u2082": "_2",
}


def _to_ascii(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: an ASCII stand-in for each character the stream cannot encode."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    return "".join(_ASCII.get(c, c.encode("ascii", "backslashreplace").decode()) for c in text), (
        error.end
    )


def _safe_output_streams() -> None:
    """Standard output and error degrade to ASCII where their encoding cannot hold a character
    (an ASCII locale): a line is never lost to a UnicodeEncodeError. Logging handlers and tqdm
    write to these same streams."""
    codecs.register_error("fashionlab-ascii", _to_ascii)
    for stream in (sys.stdout, sys.stderr):
        try:
            "\u2014\u03a3\u00b1".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="fashionlab-ascii")
        except AttributeError:  # a stream without an encoding (replaced by a caller)
            continue


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _matplotlib_folder() -> None:
    """Give matplotlib a writable config and cache folder when its default (under HOME) is not
    writable, so that no stage (each process imports it) warns that it made a temporary one: the
    user cache's ``matplotlib`` folder, else a temporary folder removed at exit. Only the CLI sets
    the environment; the stages' processes inherit it."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    from ._folders import user_cache, writable_folder

    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "matplotlib"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matplotlib"
    if writable_folder(config) is None and writable_folder(cache) is None:
        return
    ours = user_cache() / "matplotlib"
    if writable_folder(ours) is None:
        folder = str(ours)
    else:
        folder = tempfile.mkdtemp(prefix="fashionlab-matplotlib-")
        atexit.register(shutil.rmtree, folder, True)
    os.environ["MPLCONFIGDIR"] = folder
    logging.getLogger(__name__).debug(
        "matplotlib's folder under HOME is not writable; using %s", folder
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fashionlab`` console script; returns the exit code."""
    _safe_output_streams()
    _matplotlib_folder()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not _is_terminal(sys.stderr):  # bars redrawn with \r are noise in a piped log
        args.no_progress = True
    from ._log_setup import configure_logging

    configure_logging(
        logging.DEBUG if args.verbose else logging.INFO,
        "%(asctime)s %(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    with _interrupts.handling():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .errors import FashionLabError, database_error_cause, describe_os_error
    from .redaction import redact_text
    from .validation import check_seed

    try:
        if getattr(args, "seed", None) is not None:  # every command's --seed, before any work
            check_seed("--seed", args.seed)
        device = getattr(args, "device", "auto")
        if device not in ("auto", "cpu"):
            # Refuse an impossible --device (cuda without CUDA, a typo) before any work starts,
            # whatever the subcommand; torch is imported only for these values.
            from .runtime import resolve_device

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
