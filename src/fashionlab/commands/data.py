"""``fashionlab data where|verify|download|import``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "data",
        help="find, verify or download Fashion-MNIST",
        description="Find, verify or download the four Fashion-MNIST files.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    where = actions.add_parser("where", parents=[common], help="print which source is used")
    where.set_defaults(func=_where)
    verify = actions.add_parser(
        "verify",
        parents=[common],
        help="check each file (magic, shape, labels, sha256 of the content)",
    )
    verify.set_defaults(func=_verify)
    download = actions.add_parser(
        "download", parents=[common], help="download into the cache (or --data-dir)"
    )
    download.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per connection (default 30)"
    )
    download.set_defaults(func=_download)
    imports = actions.add_parser(
        "import",
        parents=[common],
        help="copy the course's .npy files into the cache as IDX",
        description="Verify the four files of DIR (the course's fashion_mnist_{train,test}_"
        "{images,labels}.npy, uint8 or float in [0, 1], or IDX files) against the "
        "canonical Fashion-MNIST and write them as IDX into the user cache "
        "(or --data-dir).",
    )
    imports.add_argument("folder", metavar="DIR", help="the folder that holds the four files")
    imports.set_defaults(func=_import)


def _where(args: argparse.Namespace) -> int:
    from fashionlab.data import find_source, source_files

    source = find_source(args.data_dir, allow_download=False)
    course = any(
        path is not None and path.suffix == ".npy" for path in source_files(source.path).values()
    )
    form = ", the course's .npy files" if course else ""
    print(f"{source.path}  ({source.kind}{form})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from fashionlab.data_check import verify

    source, rows = verify(args.data_dir)
    print(f"source: {source.path} ({source.kind})")
    width = max([28, *(len(row.path.name) for row in rows if row.path)])
    for row in rows:
        status = "OK  " if row.ok else "FAIL"
        name = row.path.name if row.path else "-"
        print(f"{status}  {name:<{width}} {row.sha256 or row.message}")
    bad = [row for row in rows if not row.ok]
    if bad:
        from fashionlab.data import _FIXES
        from fashionlab.errors import DataError

        # The table rows omit the fix; the one error line names it.
        raise DataError(
            f"{len(bad)} of {len(rows)} files failed verification: {bad[0].message}", fix=_FIXES
        )
    return 0


def _download(args: argparse.Namespace) -> int:
    from fashionlab.data import download

    dest = download(args.data_dir, timeout=args.timeout, progress=not args.no_progress)
    print(f"Fashion-MNIST verified in {dest}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from fashionlab.data_check import import_files

    dest = import_files(args.folder, args.data_dir)
    print(
        f"imported the four files of {args.folder} into {dest} as IDX (verified: the canonical "
        f"Fashion-MNIST content)"
    )
    return 0
