"""``fashionlab data where|verify|download``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("data", help="find, verify or download Fashion-MNIST",
                                   description="Find, verify or download the four Fashion-MNIST files.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    where = actions.add_parser("where", parents=[common], help="print which source is used")
    where.set_defaults(func=_where)
    verify = actions.add_parser("verify", parents=[common],
                                help="check each file (magic, shape, labels, sha256 of the content)")
    verify.set_defaults(func=_verify)
    download = actions.add_parser("download", parents=[common], help="download into the cache (or --data-dir)")
    download.add_argument("--timeout", type=float, default=30.0, help="seconds per connection (default 30)")
    download.set_defaults(func=_download)


def _where(args: argparse.Namespace) -> int:
    from fashionlab.data import find_source

    source = find_source(args.data_dir, allow_download=False)
    print(f"{source.path}  ({source.kind})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from fashionlab.data import verify

    source, rows = verify(args.data_dir)
    print(f"source: {source.path} ({source.kind})")
    for row in rows:
        status = "OK  " if row.ok else "FAIL"
        name = row.path.name if row.path else "-"
        print(f"{status}  {name:<28} {row.sha256 or row.message}")
    bad = [row for row in rows if not row.ok]
    if bad:
        from fashionlab.data import _FIXES
        from fashionlab.errors import DataError

        # The table rows omit the fix; the one error line names it.
        message = bad[0].message if "fix:" in bad[0].message else f"{bad[0].message}; {_FIXES}"
        raise DataError(f"{len(bad)} of {len(rows)} files failed verification: {message}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from fashionlab.data import download

    dest = download(args.data_dir, timeout=args.timeout, progress=not args.no_progress)
    print(f"Fashion-MNIST verified in {dest}")
    return 0
