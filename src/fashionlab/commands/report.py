"""``fashionlab report RUN_DIR``: rebuild the PDF from an existing run."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from . import force_option


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "report",
        parents=[common],
        help="rebuild report.pdf from a run directory",
        description="Rebuild RUN_DIR/report.pdf from the files of an existing run "
        "(seconds; no training).",
    )
    parser.add_argument(
        "run_dir",
        nargs="?",
        default=None,
        help="the run directory (default: --out or runs/default)",
    )
    parser.add_argument(
        "-o", "--output", default=None, help="where to write the PDF (default RUN_DIR/report.pdf)"
    )
    parser.add_argument(
        "--author",
        metavar="NAME",
        action="append",
        default=None,
        help="an author named on the cover (repeatable, in order; default: the run's own, "
        "from run.json, else `git config user.name`, else no author line)",
    )
    parser.add_argument(
        "--course",
        metavar="TEXT",
        default=None,
        help="the course line on the cover (default: the run's own, else the [report] course "
        "default)",
    )
    force_option(parser)
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from fashionlab.commands import run_dir
    from fashionlab.errors import FolderNotOursError
    from fashionlab.locks import lock_folder, move_aside
    from fashionlab.report import build_report, is_report

    folder = Path(args.run_dir) if args.run_dir else run_dir(args)
    # No lock (and so no folder made for it) where there is no run: build_report says what is wrong.
    # The report writes report.pdf (without -o) and the report/ folder of its source.
    writes = ("report",) if args.output else ("report.pdf", "report")
    lock = (
        lock_folder(folder, wait=args.wait, force=args.force, replaces=writes)
        if folder.is_dir()
        else contextlib.nullcontext()
    )
    with lock:
        output = Path(args.output) if args.output else None
        if output is not None and (output.exists() or output.is_symlink()):
            if not output.is_file() or not is_report(output):
                if not args.force:
                    raise FolderNotOursError(
                        f"{output} exists and is not a report fashionlab wrote; nothing was "
                        f"changed",
                        fix="give another -o, or pass --force to replace it (it is kept as "
                        f"{output.name}.previous)",
                    )
                print(f"kept {output} as {move_aside(output.parent, output.name)}")
        path = build_report(folder, output, authors=args.author, course=args.course)
    print(f"report: {path}")
    return 0
