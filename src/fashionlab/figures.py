"""Figures: the matplotlib backend, the printed sizes and fonts, and saving PNG + PDF."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from .atomic import atomic_save_figure

__all__ = [
    "MATH_PT",
    "PRINT_RC",
    "PRINT_WIDTH_IN",
    "pyplot",
    "print_style",
    "save_figure",
]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend: the one place fashionlab chooses the backend.

    Figures are only ever written to files, so no window system is needed (a headless machine,
    a worker process). pyplot is imported here, when a caller first draws, not when fashionlab
    is imported.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# The report's text width (A4 with 2 cm margins), in inches: the widest a figure is printed. A
# figure drawn at this width (or less) is printed at 100 %, so its font sizes are the printed ones.
PRINT_WIDTH_IN = (210 - 2 * 20) / 25.4

# Font sizes (points) for figures drawn at their printed size: nothing under 7 pt on paper.
PRINT_RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "figure.titlesize": 9,
    "mathtext.fontset": "dejavusans",
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
}


# Text with mathtext sub- or superscripts: mathtext sets them at 70 %, so 10 pt keeps them at 7 pt.
MATH_PT = 10.0


@contextlib.contextmanager
def print_style() -> Iterator[None]:
    """Draw (and save) a figure with :data:`PRINT_RC`; keep the savefig inside the block, since
    matplotlib reads the tick-label sizes when it draws."""
    import matplotlib

    with matplotlib.rc_context(PRINT_RC):
        yield


def save_figure(
    fig: Any, stem: str | os.PathLike[str], *, dpi: int = 150, **kwargs: Any
) -> list[Path]:
    """Save ``fig`` as ``stem.png`` (at ``dpi``) and ``stem.pdf``, atomically, then close it.

    The figure is closed even if a write fails, so a failing stage leaks no pyplot figures.
    """
    import matplotlib.pyplot as plt  # only callers that draw pay for pyplot

    stem = Path(stem)
    try:
        return [
            atomic_save_figure(fig, stem.with_suffix(suffix), dpi=dpi, **kwargs)
            for suffix in (".png", ".pdf")
        ]
    finally:
        plt.close(fig)
