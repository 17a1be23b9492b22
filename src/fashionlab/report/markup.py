"""Tiny helpers to write Typst markup from Python values (escaping, tables, figures, code)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

# The page's text width (A4, 2 cm margins): the widest a figure is printed.
TEXT_WIDTH_PT = (210 - 2 * 20) / 25.4 * 72

_SPECIAL = set("\\#$*_@<>[]`~=-+/\"'")


def esc(text: Any) -> str:
    """Escape ``text`` so Typst shows it literally in markup mode."""
    out = []
    for ch in str(text):
        out.append("\\" + ch if ch in _SPECIAL else ch)
    return "".join(out)


def string(text: Any) -> str:
    """A Typst string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def num(value: Any, digits: int = 4, percent: bool = False) -> str:
    """Format a number for the report (NaN/None as an em dash)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    value = float(value)
    if not math.isfinite(value):
        return "—"
    if percent:
        return f"{100 * value:.{max(digits - 2, 1)}f} %"
    if value != 0 and (abs(value) < 10 ** (-digits + 1) or abs(value) >= 1e6):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    align: str | None = None,
    size: str = "9pt",
) -> str:
    """A Typst table with a bold header row; cells are escaped text."""
    rows = list(rows)
    columns = len(header)
    cells = [f"[*{esc(h)}*]" for h in header]
    for row in rows:
        cells.extend(f"[{esc(c)}]" for c in row)
    align_arg = f", align: {align}" if align else ""
    return (
        f"#text(size: {size})[#table(columns: {columns}{align_arg}, stroke: 0.4pt + luma(180), "
        f"inset: 4pt, fill: (x, y) => if y == 0 {{ luma(235) }},\n  " + ", ".join(cells) + ")]\n"
    )


def figure_label(path: str) -> str:
    """The label of the figure showing ``path``: ``/stage/stem.pdf`` -> ``fig-stage-stem``."""
    parts = [p for p in path.rsplit(".", 1)[0].split("/") if p]
    return "fig-" + "-".join(p.replace("_", "-") for p in parts)


def figure(path: str, caption: str, width: str = "100%", placement: str | None = None) -> str:
    """A figure with an image at ``path`` (absolute from the compile root) and a caption
    (markup), labelled :func:`figure_label` for cross-references. ``placement="auto"`` lets
    Typst float it to the top or bottom of a page, so the text fills the space around it."""
    where = f', placement: {placement}, scope: "column"' if placement else ""
    label = figure_label(path)
    # A float's own location is where it was written; the metadata inside it is where it lands,
    # so page numbers are taken from <label-at> (``page-of`` in the report's preamble).
    return (
        f"#figure([#image({string(path)}, width: {width})#metadata(none) <{label}-at>], "
        f"caption: [{caption}]{where}) <{label}>\n"
    )


def code(source: str, lang: str = "python", size: str = "7.5pt") -> str:
    """A syntax-highlighted code block from a Python string."""
    return (
        f"#block(fill: luma(247), inset: 6pt, radius: 2pt, width: 100%)"
        f"[#text(size: {size})[#raw({string(source)}, lang: {string(lang)}, block: true)]]\n"
    )


def table_figure(markup: str, caption: str, label: str) -> str:
    """A table (from :func:`table`) as a numbered, captioned figure with a label to refer to."""
    return f"#figure(kind: table, caption: [{caption}])[{markup.rstrip()}] <{label}>\n"
