"""The cover (title, authors, date, provenance), the checklist that maps every item of the
assignment to the section and page answering it, and the appendix's full provenance.

Page numbers and section numbers are Typst's own (labels, ``ref`` and ``query``), so they stay
right whatever the sections hold. Every result is read from the run's files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..atomic import read_json
from ..redaction import redact_text
from .common import load as _load
from .common import test_accuracy_text
from .config import DEFAULT_COURSE, ReportConfig
from .markup import esc, figure_label, num, table

__all__ = [
    "cover",
    "cover_settings",
    "git_user_name",
    "provenance",
    "run_authors",
    "run_date",
    "SECTION_LABELS",
]

# The label of each problem's chapter heading (build attaches it to the section's first heading).
SECTION_LABELS = {"heinit": "p1", "classifier": "p2", "landscape": "p3", "autoencoder": "p4"}

TITLE = "He initialization, a tuned MLP, the loss landscape of SGD and a dense autoencoder"
SUBTITLE = "Deep learning with PyTorch on Fashion-MNIST: problems 1–4"
_MONTHS = (
    "January February March April May June July August September October November December"
).split()


def run_date(run_dir: Path) -> datetime | None:
    """When the run's results were made: the latest ``finished_at`` of its stages (the report's
    own excluded), so that the same run folder always gives the same date."""
    stamps = []
    for marker in sorted(run_dir.glob("*/stage.json")):
        if marker.parent.name == "report" or "." in marker.parent.name:  # STAGE.previous
            continue
        try:
            stamp = read_json(marker).get("finished_at")
            stamps.append(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z"))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return max(stamps).astimezone(UTC) if stamps else None


def _run_report_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    try:
        config = read_json(path).get("config", {}) if path.is_file() else {}
        report = config.get("report", {})
        return report if isinstance(report, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def run_authors(run_dir: Path) -> tuple[str, ...]:
    """The authors the run was made with (``run.json``: the report stage's config), or none."""
    return tuple(_run_report_config(run_dir).get("authors", ()))


def git_user_name(cwd: Path | None = None) -> str | None:
    """``git config user.name`` (as git resolves it in ``cwd``), or None if unset or no git."""
    try:
        done = subprocess.run(
            ["git", "config", "user.name"],
            cwd=cwd if cwd is not None and cwd.is_dir() else None,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    name = done.stdout.strip()
    return name if done.returncode == 0 and name else None


def cover_settings(
    run_dir: Path, authors: Sequence[str] | None = None, course: str | None = None
) -> ReportConfig:
    """The names and course line the cover prints.

    Authors: ``authors`` if any, else the run's own (``run.json``), else ``git config
    user.name``, else none (the cover then has no author line). Course: ``course``, else the
    run's own, else :data:`DEFAULT_COURSE`.
    """
    own = _run_report_config(run_dir)
    names = tuple(authors or ()) or tuple(own.get("authors", ()))
    if not names:
        name = git_user_name(run_dir)
        names = (name,) if name else ()
    line = course if course is not None else own.get("course", DEFAULT_COURSE)
    return ReportConfig(authors=names, course=line)


def _date_text(run_dir: Path) -> str:
    date = run_date(run_dir)
    if date is None:
        return "date unknown (no finished stage)"
    return f"{date.day} {_MONTHS[date.month - 1]} {date.year}"


def _authors(authors: Sequence[str]) -> str:
    if not authors:  # the CLI says how to name them; the PDF shows no note to the author
        return ""
    return f"#text(size: 13pt)[{' · '.join(esc(a) for a in authors)}]\n\n"


def _provenance_line(run: dict[str, Any]) -> str:
    if not run:
        return "No run.json: provenance unknown."
    git = run.get("git") or {}
    versions = run.get("versions", {})
    commit = (git.get("commit") or "unknown")[:12]
    parts = [
        f"git {commit}" + (" with uncommitted changes" if git.get("dirty") else " (clean)"),
        f"seed {run.get('seed')}",
        f"device {run.get('device')}",
        *(
            f"{k} {versions[k]}"
            for k in ("python", "torch", "torchvision", "optuna", "numpy")
            if k in versions
        ),
        f"data: {run.get('data', {}).get('source', '—')}, sha256-verified",
    ]
    mode = " A quick smoke run: small subsets, few trials." if run.get("quick") else ""
    return esc(" · ".join(parts) + "." + mode)


def _identity(heinit: dict[str, Any] | None, name: str) -> str:
    """The headline of one identity: its verdicts and the case where its assumptions hold."""
    if not heinit:
        return "—"
    rows = [r for r in heinit["identities"] if r["name"] == name]
    if not rows:
        return "—"
    agree = sum(r["holds"] == r["expected_to_hold"] for r in rows)
    good = next((r for r in rows if r["expected_to_hold"]), rows[0])
    return (
        f"{num(good['lhs'], 3)} vs {num(good['rhs'], 3)} ({good['case']}); {agree}/{len(rows)} "
        "Monte-Carlo verdicts as predicted"
    )


def _case(heinit: dict[str, Any] | None, name: str, case: str) -> str:
    """Both sides of one identity in the first setting whose case contains ``case``."""
    rows = [r for r in (heinit or {}).get("identities", []) if r["name"] == name]
    row = next((r for r in rows if case in r["case"]), None)
    if row is None:
        return "—"
    verdict = "holds" if row["holds"] else "does not hold"
    return f"{num(row['lhs'], 3)} vs {num(row['rhs'], 3)} ({row['case']}): {verdict}"


def _checklist_rows(run_dir: Path) -> list[tuple[str, str, str, str]]:
    """(item, what is asked, Typst label answering it, result text) for every assignment item."""
    # every file read (and a broken one refused) before any row is written
    heinit = _load(run_dir, "heinit/results.json")
    best = _load(run_dir, "tune/best.json")
    plain = _load(run_dir, "classifier/test.json")
    variant = _load(run_dir, "variant/test.json")
    land = _load(run_dir, "landscape/landscape.json")
    auto = _load(run_dir, "autoencoder/metrics.json")
    return [
        *_problem1_rows(heinit),
        *_problem2_rows(best, plain, variant),
        *_problem3_rows(land, _landscape_label(run_dir)),
        *_problem4_rows(auto, _figure_label(run_dir, "autoencoder", "reconstructions", "p4")),
    ]


def _problem1_rows(heinit: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """Problem 1's items: each step of the derivation and its Monte-Carlo verdicts."""
    kaiming = (heinit or {}).get("kaiming", [])
    gain = (
        f"kaiming_normal_: {sum(k['holds'] for k in kaiming)}/{len(kaiming)} variances = "
        "2/((1+a²) n)"
        if kaiming
        else _identity(heinit, "he_layer_gain")
    )
    return [
        (
            "1.1",
            "Var of the sum: assumptions, covariances",
            "p1-1",
            _identity(heinit, "sum_variance"),
        ),
        (
            "1.2",
            "Var[wx] = Var[w] E[x²]",
            "p1-2",
            _identity(heinit, "product_variance_zero_mean"),
        ),
        ("1.3 (a)", "E[z] = 0, independent of x", "p1-3a", _identity(heinit, "relu_mean")),
        (
            "1.3 (b)",
            "density of z for fixed x",
            "p1-3b",
            _case(heinit, "relu_symmetry", "non-Gaussian"),
        ),
        ("1.3 (c)", "symmetry of z around 0", "p1-3c", _identity(heinit, "relu_symmetry")),
        (
            "1.3 (d)",
            "Var[z] as twice the positive half",
            "p1-3d",
            _case(heinit, "relu_second_moment", "symmetric w"),
        ),
        (
            "1.3 (e)",
            "E[x²] as the same integral",
            "p1-3e",
            _identity(heinit, "relu_second_moment"),
        ),
        ("1.3", "then Var[w] = 2/n_l", "p1-cond", gain),
    ]


def _problem2_rows(
    best: dict[str, Any] | None, plain: dict[str, Any] | None, variant: dict[str, Any] | None
) -> list[tuple[str, str, str, str]]:
    """Problem 2's items: the MLP, the tuning, the retrain's test, the variant."""
    p2_1 = (
        f"{plain['model_name']}: SGD, L2 {num(plain['train']['l2'], 3)} on the weights"
        if plain
        else "—"
    )
    p2_2 = (
        f"{best['counts'].get('complete', 0)} trials completed; best validation accuracy "
        f"{num(best['val_acc'], 4, percent=True)} (trial {best['number']}, {best['epochs']} "
        "epochs)"
        if best
        else "—"
    )
    p2_3 = f"test accuracy {test_accuracy_text(plain)}" if plain else "—"
    p2_4 = (
        f"{variant['model_name']}: test accuracy {test_accuracy_text(variant)}" if variant else "—"
    )
    return [
        ("2.1", "the MLP, SGD with L2 on the weights", "p2-1", p2_1),
        ("2.2", "hyperparam_tuning on a validation split", "p2-2", p2_2),
        ("2.3", "last 20 iterations, test accuracy", "p2-3", p2_3),
        ("2.4", "bonus: a better network", "p2-4", p2_4),
    ]


def _problem3_rows(land: dict[str, Any] | None, figure: str) -> list[tuple[str, str, str, str]]:
    """Problem 3's items: the surface over the PCA plane and the path on it (in ``figure``)."""
    ev = ((land or {}).get("own_plane") or land or {}).get("explained_variance_ratio")
    p3_1 = (
        f"{(land.get('own_plane') or land)['n_snapshots']} snapshots; PCA explains "
        f"{num(ev[0], 3, percent=True)} + "
        f"{num(ev[1], 3, percent=True)}"
        if land
        else "—"
    )
    p3_2 = (
        f"final loss {num(land['final_loss'], 4)}; surface from {num(land['loss_min'], 3)} to "
        f"{num(land['loss_max'], 3)}"
        if land
        else "—"
    )
    return [
        ("3.1", "f_CE surface over the PCA plane of the SGD path", "p3", p3_1),
        ("3.2", "the SGD path as a scatter on it", figure, p3_2),
    ]


def _problem4_rows(auto: dict[str, Any] | None, figure: str) -> list[tuple[str, str, str, str]]:
    """Problem 4's tasks: the data loading, the network, its training, the figure (``figure``)."""
    loader = (auto or {}).get("loader", "—")
    task1 = f"{loader} loader, {num(auto['seconds_per_epoch'], 3)} s per epoch" if auto else "—"
    task3 = (
        f"{auto['epochs']} epochs of Adam (lr {num(auto['lr'], 3)}): test MSE "
        f"{num(auto['test_mse'], 4)}"
        if auto
        else "—"
    )
    return [
        ("4, task 1", "torchvision data loading", "p4-1", task1),
        ("4, task 2", "the autoencoder", "p4-2", "784–128–64–128–784, ReLU, sigmoid output"),
        ("4, task 3", "MSE + Adam, 20 epochs", "p4-3", task3),
        (
            "4, task 4",
            "the reconstruction figure",
            figure,
            _images_text(auto),
        ),
    ]


def _images_text(auto: dict[str, Any] | None) -> str:
    images = (auto or {}).get("images") or []
    shown = [
        f"#{i['index']} ({i['class']})" for i in images if isinstance(i, dict) and "index" in i
    ]
    return ("test images " + " and ".join(shown)) if shown else "—"


def _figure_label(run_dir: Path, stage: str, stem: str, fallback: str) -> str:
    """The label the report gives a figure (see ``markup.figure``), if the figure exists."""
    if any((run_dir / stage / f"{stem}{s}").is_file() for s in (".pdf", ".png")):
        return figure_label(f"/{stage}/{stem}.pdf")
    return fallback


def _landscape_label(run_dir: Path) -> str:
    return _figure_label(run_dir, "landscape", "landscape", "p3")


def _checklist(run_dir: Path) -> str:
    cells = ["[*item*]", "[*asked*]", "[*answered in*]", "[*page*]", "[*result (from the run)*]"]
    for item, asked, label, result in _checklist_rows(run_dir):
        cells += [
            f"[{esc(item)}]",
            f"[{esc(asked)}]",
            # (a)-(e) of problem 1.3 are enumerated items: refer to the step, mark the item
            f"[#answered(<p1-3>, [ ({label[-1]})])]"
            if label[:-1] == "p1-3"
            else f"[#answered(<{label}>, [])]",
            f"[#page-of(<{label}>)]",
            f"[{esc(result)}]",
        ]
    return (
        "#text(size: 8.5pt)[#table(columns: (auto, auto, auto, auto, 1fr), "
        "stroke: 0.4pt + luma(180), inset: 3.5pt, align: (left, left, left, right, left), "
        "fill: (x, y) => if y == 0 { luma(235) },\n  " + ", ".join(cells) + ")]\n"
    )


def cover(run_dir: Path, settings: ReportConfig) -> str:
    """The cover page: course line, title, authors, the run's date and provenance, the
    checklist; the contents after it."""
    run = _load(run_dir, "run.json") or {}
    course = f"#text(size: 11pt)[{esc(settings.course)}]\n\n" if settings.course else ""
    return (
        "#align(center)[\n" + course + f'#text(size: 18pt, weight: "bold")[{esc(TITLE)}]\n\n'
        f"#text(size: 10pt, fill: luma(80))[{esc(SUBTITLE)}]\n\n"
        f"#v(0.3em)\n{_authors(settings.authors)}"
        f"#text(size: 10pt)[{esc(_date_text(run_dir))}]\n"
        "]\n"
        f"#v(0.3em)\n#align(center)[#block(width: 92%)[#text(size: 7.5pt, fill: luma(60))["
        f"Made by fashionlab from the run folder “{esc(run_dir.name)}”: "
        f"{_provenance_line(run)} Every number is read from the run's files "
        "(full provenance: @provenance).]]]\n"
        "#v(0.4em)\n"
        "#heading(level: 2, numbering: none, outlined: false)[Checklist: where each item of "
        "the assignment is answered]\n"
        + _checklist(run_dir)
        + "#v(0.6em)\n#text(size: 9pt)[#outline(title: [Contents], depth: 1)]\n"
    )


def provenance(run_dir: Path) -> str:
    """The appendix's full provenance: versions, data checksums, the command, stage times."""
    run = _load(run_dir, "run.json")
    out = ["== Provenance <provenance>\n"]
    if not run:
        return "".join(out) + "_This folder has no run.json._\n"
    git = run.get("git") or {}
    rows: list[list[Any]] = [
        ["command", redact_text(run.get("command", "—"))],  # an older run.json may hold one
        ["seed", run.get("seed")],
        ["device", run.get("device")],
        [
            "git commit",
            (git.get("commit") or "—") + (" (uncommitted changes)" if git.get("dirty") else ""),
        ],
        ["data source", run.get("data", {}).get("source", "—")],
    ]
    rows += [[k, v] for k, v in run.get("versions", {}).items()]
    for key, digest in run.get("data", {}).get("files", {}).items():
        rows.append([f"sha256 {key}", digest])
    main = table(["", "value"], rows, size="8pt").rstrip()
    # The report's own time is known only after it is built: leaving it out keeps the PDF a
    # function of the results (a rebuild of the same folder gives the same bytes).
    times = {k: v for k, v in run.get("stage_seconds", {}).items() if k != "report"}
    if not times:
        return "".join(out) + main + "\n"
    unit = (run.get("calibration") or {}).get("seconds")
    rows = [[stage, f"{seconds:,.1f}"] for stage, seconds in times.items()]
    header = ["stage", "wall time (s)"]
    if unit:  # the same times in a unit another machine can measure (run.json's calibration)
        header.append("calibration units")
        rows = [
            [stage, f"{seconds:,.1f}", f"{seconds / unit:,.0f}"] for stage, seconds in times.items()
        ]
        total = sum(times.values())
        rows.append(["total", f"{total:,.1f}", f"{total / unit:,.0f}"])
    stages = table(header, rows, size="8pt").rstrip()
    if unit:
        stages += (
            f"\n#text(size: 7.5pt)[One calibration unit: {unit:.2f} s here, the time of "
            f"{esc(run['calibration'].get('workload', 'a fixed workload'))}.]"
        )
    out.append(f"#grid(columns: (3fr, 1fr), gutter: 1em, [{main}], [{stages}])\n")
    return "".join(out)
