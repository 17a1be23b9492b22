"""What the report needs to know about a figure's PDF: its page size and its text sizes.

Matplotlib writes the page size as a plain ``/MediaBox`` and every run of text (mathtext too)
with a ``Tf`` operator that names its font size in points; the text matrix that follows only
rotates. So the sizes in the file, times the scale at which the report prints the page, are the
sizes a reader sees.
"""

from __future__ import annotations

import os
import re
import zlib

__all__ = ["pdf_page_size", "pdf_font_sizes", "printed_text_sizes"]

_MEDIABOX = re.compile(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]")
_STREAM = re.compile(rb"<<(.*?)>>\s*stream\r?\n(.*?)\r?\nendstream", re.S)
_TF = re.compile(rb"/[^\s/]+\s+([\d.]+)\s+Tf\b")


def pdf_page_size(path: str | os.PathLike[str]) -> tuple[float, float]:
    """(width, height) in points of the first page of a one-page PDF."""
    with open(path, "rb") as fh:
        data = fh.read()
    match = _MEDIABOX.search(data)
    if match is None:
        raise ValueError(f"{path}: no /MediaBox found")
    x0, y0, x1, y1 = (float(v) for v in match.groups())
    return x1 - x0, y1 - y0


def pdf_font_sizes(path: str | os.PathLike[str]) -> list[float]:
    """Every font size (points, at the PDF's own size) that the page's text is set in."""
    with open(path, "rb") as fh:
        data = fh.read()
    sizes: list[float] = []
    for header, body in _STREAM.findall(data):
        if b"/FlateDecode" in header:
            try:
                body = zlib.decompress(body)
            except zlib.error:
                continue
        sizes.extend(float(v) for v in _TF.findall(body))
    return sizes


_IMAGE = re.compile(r'image\("([^"]+)"(?:,\s*width:\s*([\d.]+)(pt|%))?')


def printed_text_sizes(
    typst_source: str, root: str | os.PathLike[str], text_width_pt: float
) -> dict[str, float | None]:
    """The smallest printed text size (points) of every image a report's Typst source shows.

    Args:
        typst_source: the report's ``report.typ``.
        root: the folder image paths are relative to (the run folder).
        text_width_pt: what a ``100%`` width means.

    Returns:
        image path -> smallest font size times the print scale (width printed / width drawn);
        None for an image whose text sizes cannot be read (not a PDF, or no text in it).
    """
    out: dict[str, float | None] = {}
    for path, width, unit in _IMAGE.findall(typst_source):
        file = os.path.join(os.fspath(root), path.lstrip("/"))
        if not path.endswith(".pdf"):
            out[path] = None
            continue
        natural, _ = pdf_page_size(file)
        if not width:
            printed = min(natural, text_width_pt)
        elif unit == "%":
            printed = float(width) / 100 * text_width_pt
        else:
            printed = float(width)
        sizes = pdf_font_sizes(file)
        out[path] = min(sizes) * printed / natural if sizes else None
    return out
