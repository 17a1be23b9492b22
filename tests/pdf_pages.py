"""Read a built report the way a reader does: the text of each page (``pdftotext -layout``),
every page number the contents and the checklist name, checked against the page it names, and how
many pages a part fills (``pdftotext -bbox-layout``)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

_CONTENTS = re.compile(r"^\s*([A-Z\d][\d.A-Z]*)?\s+(\S.*?)\s*(?:\.\s*){2,}\s*(\d+)\s*$")
_CHECKLIST = re.compile(
    r"^(\d(?:\.\d)?(?: \([a-e]\))?|4, task \d)\s{2,}.*?\s{2,}"
    r"(Problem \d+(?:\.\d+)?(?: \([a-e]\))?|Figure \d+|Table \d+)\s+(\d+)\b"
)


def page_texts(pdf: Path) -> list[str]:
    """The text of every page, in order (form feeds split pdftotext's output)."""
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    out = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    pages = out.replace("\u2060", "").split("\f")  # Typst joins a page number with U+2060
    return pages[:-1] if pages and not pages[-1].strip() else pages


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)


def contents_entries(pages: list[str]) -> list[tuple[str, str, int]]:
    """(number, title, page) of every line of the table of contents."""
    lines = next(
        page.splitlines() for page in pages if "Contents" in [x.strip() for x in page.splitlines()]
    )
    entries = []
    for line in lines[[x.strip() for x in lines].index("Contents") + 1 :]:
        match = _CONTENTS.match(line)
        if match:
            entries.append((match[1] or "", match[2], int(match[3])))
    return entries


def checklist_entries(pages: list[str]) -> list[tuple[str, str, int]]:
    """(item, where it is answered, page) of every row of the cover's checklist."""
    return [
        (m[1], m[2], int(m[3]))
        for line in pages[0].splitlines()
        if (m := _CHECKLIST.match(line.strip()))
    ]


def _answer_on_page(where: str, page: str) -> bool:
    lines = [line.strip() for line in page.splitlines()]
    if where.startswith(("Figure", "Table")):  # the caption
        return any(line.startswith(f"{where}:") for line in lines)
    number = where.split()[1]
    item = re.search(r"\(([a-e])\)$", where)
    if item:  # an enumerated item of a step
        return any(line.startswith(f"({item[1]})") for line in lines)
    if "." not in number:  # a chapter: its heading shows the body only
        return any(line.startswith(f"Problem {number} —") for line in lines)
    return any(line.startswith(f"{number} ") for line in lines)


def wrong_page_references(pdf: Path) -> list[str]:
    """Every contents line or checklist row whose heading is not on the page it names."""
    pages = page_texts(pdf)
    wrong = []
    entries = contents_entries(pages)
    assert entries, "no table of contents found"
    for number, title, page in entries:
        if not 1 <= page <= len(pages) or _flat(title)[:30] not in _flat(pages[page - 1]):
            wrong.append(f"contents: {number} {title!r} is not on p. {page}")
    rows = checklist_entries(pages)
    assert rows, "no checklist rows found on the cover"
    for item, where, page in rows:
        if not 1 <= page <= len(pages) or not _answer_on_page(where, pages[page - 1]):
            wrong.append(f"checklist {item}: {where} is not on p. {page}")
    return wrong


def blank_pages(pdf: Path, min_chars: int = 30) -> list[int]:
    """The pages (1-based) with almost no text (a page number alone, say)."""
    return [i + 1 for i, page in enumerate(page_texts(pdf)) if len(_flat(page)) < min_chars]


def small_text(pdf: Path, min_pt: float = 7.0, fonts: tuple[str, ...] = ("DejaVu",)) -> list:
    """``(page, size, text)`` of every run of text under ``min_pt`` points as printed, in a font
    whose name holds one of ``fonts``: DejaVu Sans is matplotlib's (the figures), DejaVu Sans
    Mono Typst's raw text (the listings and the console); the prose and its mathematics are in
    other fonts."""
    from pypdf import PdfReader

    found = []
    for number, page in enumerate(PdfReader(pdf).pages, start=1):

        def visit(text, cm, tm, font, size, number=number) -> None:
            name = str((font or {}).get("/BaseFont", ""))
            if not text.strip() or not any(f in name for f in fonts):
                return
            printed = size * (tm[0] ** 2 + tm[1] ** 2) ** 0.5 * (cm[0] ** 2 + cm[1] ** 2) ** 0.5
            if printed < min_pt - 1e-3:
                found.append((number, round(printed, 2), text.strip()[:40]))

        page.extract_text(visitor_text=visit)
    return found


_LINE = re.compile(
    r'<line xMin="[\d.]+" yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">(.*?)</line>', re.S
)
_WORD = re.compile(r"<word [^>]*>([^<]*)</word>")


def _text_lines(pdf: Path) -> tuple[float, list[tuple[int, float, float, str]]]:
    """(page height, ``(page, top, bottom, text)`` of every line of text) in points from the top
    of the page (``pdftotext -bbox-layout``)."""
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    out = subprocess.run(
        ["pdftotext", "-bbox-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    lines = []
    height = 0.0
    for number, page in enumerate(out.split("<page ")[1:], start=1):
        height = float(re.search(r'height="([\d.]+)"', page)[1])
        for top, bottom, words in _LINE.findall(page):
            text = html.unescape(" ".join(_WORD.findall(words)))
            lines.append((number, float(top), float(bottom), text))
    return height, lines


def span_in_pages(pdf: Path, first: str, stop: str, margin_pt: float = 2 / 2.54 * 72) -> float:
    """How many pages of text area the part from the line that starts with ``first`` to the last
    line before the next one that starts with ``stop`` (or the document's end) fills: from the
    top of its first line to the bottom of its last, the page number lines left out; a page of
    text area is the page less its top and bottom margins (``margin_pt``, the report's 2 cm)."""
    height, lines = _text_lines(pdf)
    body = [line for line in lines if line[1] < height - margin_pt]  # not the page numbers
    start = next(i for i, line in enumerate(body) if line[3].startswith(first))
    end = next((i for i in range(start + 1, len(body)) if body[i][3].startswith(stop)), len(body))
    (page_a, top, _, _), (page_b, _, bottom, _) = body[start], body[end - 1]
    area = height - 2 * margin_pt
    return (page_b - page_a) + (bottom - top) / area
