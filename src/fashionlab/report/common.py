"""What every section needs: a run file that may be missing, the note for a stage that has not
run, and a stage's figure printed at the width it was drawn for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import read_json
from .markup import TEXT_WIDTH_PT, esc, figure
from .pdfinfo import pdf_page_size

__all__ = ["load", "missing", "stage_figure", "test_accuracy_text"]


def load(run_dir: Path, relative: str) -> Any | None:
    """The JSON file ``run_dir/relative``, or None if that stage has not written it."""
    path = run_dir / relative
    return read_json(path) if path.is_file() else None


def missing(stage: str) -> str:
    return (
        f"_The {esc(stage)} stage has not run in this run directory; run `fashionlab run` to fill "
        "this section._\n"
    )


def stage_figure(
    run_dir: Path,
    stage: str,
    stem: str,
    caption: str,
    width: str = "100%",
    placement: str | None = None,
) -> str:
    """Prefer the vector PDF of a figure, printed at its own width (the width it was drawn
    for, at most the text width); fall back to the PNG at ``width``. ``placement="auto"``:
    a float (see :func:`markup.figure`)."""
    pdf = run_dir / stage / f"{stem}.pdf"
    if pdf.is_file():
        natural, _ = pdf_page_size(pdf)
        printed = f"{min(natural, TEXT_WIDTH_PT):.2f}pt"
        return figure(f"/{stage}/{stem}.pdf", caption, printed, placement)
    if (run_dir / stage / f"{stem}.png").is_file():
        return figure(f"/{stage}/{stem}.png", caption, width, placement)
    return f"_Figure {esc(stem)} is missing._\n"


def test_accuracy_text(test: dict[str, Any]) -> str:
    """A retrain's test accuracy: the mean ± sample standard deviation over its seeds (test.json
    ``test_accuracy`` and ``test_accuracy_std``), or the one value of a single seed."""
    seeds = len(test.get("test_accuracies", [])) or 1
    if seeds < 2:
        return f"{100 * test['test_accuracy']:.2f} %"
    return (
        f"{100 * test['test_accuracy']:.2f} ± {100 * test['test_accuracy_std']:.2f} % "
        f"({seeds} seeds)"
    )
