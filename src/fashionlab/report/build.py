"""Build ``report.pdf`` from the files of a run directory.

Every number comes from the run's JSON files; code listings come from the live functions
through :mod:`inspect`. Sections whose stage has not run say so instead of failing, so
``fashionlab report`` works on a partial run. Typst (through the ``typst`` package) compiles
the generated ``<run>/report/report.typ`` with the run directory as its root, so figures are
referenced as ``/stage/file.pdf``.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

from ..errors import FashionLabError
from ..utils import atomic_write_bytes, atomic_write_text
from . import sections

__all__ = ["build_report", "report_source"]

logger = logging.getLogger(__name__)

PREAMBLE = """\
#set document(title: "fashionlab — a deep-learning study on Fashion-MNIST")
#set page(paper: "a4", margin: (x: 2cm, y: 2cm), numbering: "1 / 1")
#set text(size: 10pt)
#set par(justify: true)
#set heading(numbering: "1.1")
#show heading.where(level: 1): it => { pagebreak(weak: true); it }
#show raw.where(block: true): set par(justify: false)
"""


def report_source(run_dir: str | os.PathLike[str]) -> str:
    """The Typst source of the report for ``run_dir`` (figures referenced from the run root)."""
    run_dir = Path(run_dir)
    parts = [PREAMBLE]
    for build in sections.SECTIONS:
        parts.append(build(run_dir))
    return "\n".join(parts)


def build_report(
    run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``<run>/report/report.typ`` and compile it to ``output`` (default
    ``<run>/report.pdf``).

    Raises:
        FashionLabError: ``run_dir`` is not a run directory, or Typst fails to compile.
    """
    import typst

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() and not any(
        (run_dir / stage).is_dir() for stage in ("heinit", "tune", "landscape", "autoencoder")
    ):
        raise FashionLabError(
            f"{run_dir} is not a fashionlab run directory (no run.json and no stage folders); "
            f"run `fashionlab run --out {run_dir}` first"
        )
    source_dir = run_dir / "report"
    derivation = resources.files("fashionlab.report").joinpath("derivation.typ")
    if derivation.is_file():
        atomic_write_text(source_dir / "derivation.typ", derivation.read_text())
    main = atomic_write_text(source_dir / "report.typ", report_source(run_dir))
    try:
        pdf = typst.compile(str(main), root=str(run_dir))
    except Exception as exc:  # typst raises its own error types with the source location
        raise FashionLabError(f"Typst could not compile {main}: {exc}") from exc
    output = Path(output) if output is not None else run_dir / "report.pdf"
    atomic_write_bytes(output, pdf)
    logger.info("report written to %s (%d kB)", output, len(pdf) // 1024)
    return output
