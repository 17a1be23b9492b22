"""``fashionlab run``: a quick study end to end, caching, forcing, resuming, and the report."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fashionlab.atomic import read_json
from fashionlab.errors import ConfigError, FashionLabError
from fashionlab.pipeline import StudyConfig, load_study_config, run_study, stage_order
from fashionlab.report import build_report, run_date
from fashionlab.report.markup import TEXT_WIDTH_PT, num
from fashionlab.report.pdfinfo import printed_text_sizes
from pdf_pages import blank_pages, small_text, wrong_page_references
from process_tools import freeze_when, running_owners, started
from quick_study import QuickRun

pytestmark = pytest.mark.slow


def _pdf_text(path: Path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() or "" for page in PdfReader(path).pages)


def test_quick_run_runs_every_stage_and_records_provenance(quick_run: QuickRun) -> None:
    run_dir, outcomes = quick_run.folder, quick_run.outcomes
    assert [o.name for o in outcomes] == stage_order()
    assert all(o.status == "ran" for o in outcomes)
    for name in stage_order():
        assert (run_dir / name / "stage.json").is_file(), name
    run = read_json(run_dir / "run.json")
    assert run["seed"] == 0 and run["device"] == "cpu" and run["quick"] is True
    assert {"python", "torch", "torchvision", "optuna", "numpy"} <= set(run["versions"])
    assert run["data"]["files"]["train-images"].startswith("c59f468a")
    assert set(run["stage_seconds"]) == set(stage_order())
    assert set(run["config"]) == set(stage_order())
    # The cost in a unit another machine can measure: a fixed workload timed on this one.
    assert run["calibration"]["seconds"] > 0 and "3x50" in run["calibration"]["workload"]


def test_report_pdf_holds_sections_and_the_runs_numbers(quick_run: QuickRun) -> None:
    from pypdf import PdfReader

    run_dir = quick_run.folder
    pdf = run_dir / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert len(PdfReader(pdf).pages) >= 10
    text = " ".join(_pdf_text(pdf).split())
    assert "calibration units" in text
    for title in (
        "Problem 1",
        "He initialization",
        "Problem 2",
        "Problem 3",
        "Problem 4",
        "Appendix",
        "hyperparam_tuning",
    ):
        assert title in text, title
    plain = read_json(run_dir / "classifier" / "test.json")
    variant = read_json(run_dir / "variant" / "test.json")
    land = read_json(run_dir / "landscape" / "landscape.json")
    auto = read_json(run_dir / "autoencoder" / "metrics.json")
    expected = [
        num(plain["test_accuracy"], 4, percent=True),
        num(variant["test_accuracy"], 4, percent=True),
        num(land["explained_variance_ratio"][0], 3, percent=True),
        num(auto["test_mse"], 4),
        f"{plain['last20_losses'][-1]:.4f}",
    ]
    for number in expected:
        assert number in text, number


@pytest.mark.parametrize("check", [["pdfinfo"], ["qpdf", "--check"]])
def test_the_report_pdf_has_no_syntax_error(quick_run: QuickRun, check: list[str]) -> None:
    import shutil

    if shutil.which(check[0]) is None:
        message = f"{check[0]} is not installed (apt-get install poppler-utils qpdf)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run_dir = quick_run.folder
    done = subprocess.run([*check, str(run_dir / "report.pdf")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in done.stderr.lower(), done.stderr  # pdfinfo exits 0 after one
    assert "No syntax or stream encoding errors" in done.stdout or check == ["pdfinfo"]


def test_the_same_run_folder_gives_a_byte_identical_pdf(
    quick_run_copy: QuickRun, tmp_path: Path
) -> None:
    run_dir = quick_run_copy.folder
    first = build_report(run_dir, tmp_path / "first.pdf").read_bytes()
    second = build_report(run_dir, tmp_path / "second.pdf").read_bytes()
    assert first == second
    # The PDF's date is the run's (its last finished stage), not the time of the build.
    date = run_date(run_dir)
    assert date is not None and f"D:{date:%Y%m%d%H%M%S}".encode() in first


def test_every_figure_of_the_report_prints_its_text_at_7_pt_or_more(
    quick_run_copy: QuickRun,
) -> None:
    run_dir = quick_run_copy.folder
    build_report(run_dir)
    source = (run_dir / "report" / "report.typ").read_text()
    sizes = printed_text_sizes(source, run_dir, TEXT_WIDTH_PT)
    # he-init (2), last-20 (2), landscape, reconstructions, latent map: all of them vector PDFs
    assert len(sizes) >= 7, sizes
    too_small = {path: size for path, size in sizes.items() if size is None or size < 7 - 1e-3}
    assert not too_small, f"text under 7 pt at print size (None: not a PDF): {too_small}"


def test_the_checklist_answers_every_item_and_the_cover_names_the_authors(
    quick_run_copy: QuickRun, tmp_path: Path
) -> None:
    from pypdf import PdfReader

    run_dir = quick_run_copy.folder
    pdf = tmp_path / "named.pdf"
    code = subprocess.run(
        [sys.executable, "-m", "fashionlab", "report", str(run_dir), "-o", str(pdf)]
        + ["--author", "Ada Lovelace", "--author", "Alan Turing"],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 0, code.stderr
    cover = " ".join((PdfReader(pdf).pages[0].extract_text() or "").split())
    assert "Ada Lovelace · Alan Turing" in cover and "Author names missing" not in cover
    for item in ("1.1", "1.3 (a)", "1.3 (e)", "2.3", "2.4", "3.2", "4, task 1", "4, task 4"):
        assert item in cover, item
    assert "not in this run" not in cover  # every item's label exists: a section and a page
    plain = read_json(run_dir / "classifier" / "test.json")
    assert num(plain["test_accuracy"], 4, percent=True) in cover


def test_the_report_is_a_hand_in_of_about_16_pages(
    quick_run_copy: QuickRun, tmp_path: Path
) -> None:
    from pypdf import PdfReader

    run_dir = quick_run_copy.folder
    pdf = build_report(run_dir, tmp_path / "report.pdf", authors=["A. Author"])
    # a default run gives 14-18 pages; the quick run has the same sections, smaller tables
    assert 14 <= len(PdfReader(pdf).pages) <= 18
    assert blank_pages(pdf) == []
    assert wrong_page_references(pdf) == []  # the contents and the checklist, read from the PDF
    assert small_text(pdf) == []  # figures and listings at 7 pt or more, as printed
    text = " ".join(_pdf_text(pdf).split())
    for artefact in ("doubling(s)", "MLP: the MLP", "Author names missing", "similar loss"):
        assert artefact not in text, artefact


def test_second_run_skips_every_stage(quick_run_copy: QuickRun) -> None:
    run_dir, study = quick_run_copy.folder, quick_run_copy.study
    before = (run_dir / "report.pdf").stat().st_mtime_ns
    outcomes = run_study(run_dir, study, progress=False, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["cached"] * len(stage_order())
    assert (run_dir / "report.pdf").stat().st_mtime_ns == before


def test_a_deleted_report_is_made_again(quick_run_copy: QuickRun) -> None:
    run_dir, study = quick_run_copy.folder, quick_run_copy.study
    (run_dir / "report.pdf").unlink()
    lines: list[str] = []
    outcomes = {
        o.name: o.status for o in run_study(run_dir, study, progress=False, echo=lines.append)
    }
    assert outcomes.pop("report") == "ran" and set(outcomes.values()) == {"cached"}
    assert "[report] report.pdf is missing: running it again" in lines
    assert (run_dir / "report.pdf").read_bytes()[:5] == b"%PDF-"


# A smaller He-init stage than the quick run's (samples 100000): a changed stage config.
SMALLER_HEINIT = {"heinit": {"samples": 60_000, "batches": 30}}


def test_changed_stage_config_is_refused_until_forced_with_what_depends_on_it(
    quick_run_copy: QuickRun,
) -> None:
    run_dir, study = quick_run_copy.folder, quick_run_copy.study_with(**SMALLER_HEINIT)
    refused = r"heinit: .*samples 100000 \(asked: 60000\).*--force heinit"
    with pytest.raises(ConfigError, match=refused):
        run_study(run_dir, study, progress=False, echo=lambda line: None)
    outcomes = {
        o.name: o.status
        for o in run_study(
            run_dir, study, force=["heinit"], progress=False, jobs=2, echo=lambda line: None
        )
    }
    assert outcomes["heinit"] == "ran" and outcomes["report"] == "ran"
    assert all(
        status == "cached" for name, status in outcomes.items() if name not in ("heinit", "report")
    )


def test_force_moves_the_old_outputs_aside(quick_run_copy: QuickRun) -> None:
    run_dir, study = quick_run_copy.folder, quick_run_copy.study_with(**SMALLER_HEINIT)
    run_study(run_dir, study, force=["heinit"], progress=False, jobs=2, echo=lambda line: None)
    assert read_json(run_dir / "heinit.previous" / "stage.json")["config"]["samples"] == 100_000
    outcomes = run_study(
        run_dir, study, force=["heinit"], progress=False, jobs=1, echo=lambda line: None
    )
    status = {o.name: o.status for o in outcomes}
    assert status["heinit"] == "ran" and status["report"] == "ran" and status["tune"] == "cached"
    # Same config, run in this process (jobs=1) instead of a worker (jobs=2): the same numbers.
    now = read_json(run_dir / "heinit" / "results.json")["identities"]
    before = read_json(run_dir / "heinit.previous" / "results.json")["identities"]
    assert [(r["lhs"], r["rhs"]) for r in now] == [(r["lhs"], r["rhs"]) for r in before]
    # The older folder moved aside by the first force is kept, not deleted.
    assert read_json(run_dir / "heinit.previous.2" / "stage.json")["config"]["samples"] == 100_000


def test_report_rebuilds_from_a_partial_run(quick_run: QuickRun, tmp_path: Path) -> None:
    import shutil

    run_dir = quick_run.folder
    partial = tmp_path / "partial"
    shutil.copytree(run_dir / "heinit", partial / "heinit")
    pdf = build_report(partial)
    text = _pdf_text(pdf)
    assert "He initialization" in text and "has not run" in text


def test_bad_study_settings_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[tune\nn_trials = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_study_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[tuning]\nn_trials = 3\n")
    with pytest.raises(ConfigError, match="unknown stage"):
        load_study_config(unknown)
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        run_study(tmp_path / "run", StudyConfig(quick=True), force=["nope"], echo=lambda line: None)
    with pytest.raises(FashionLabError, match="not a fashionlab run directory"):
        build_report(tmp_path / "empty")


def _finished_trials(db: Path) -> list[int]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            rows = connection.execute(
                "SELECT number FROM trials WHERE state IN ('COMPLETE', 'PRUNED') ORDER BY number"
            ).fetchall()
    except sqlite3.Error:
        return []
    return [row[0] for row in rows]


def test_a_run_killed_during_tuning_resumes_trial_by_trial(
    tmp_path: Path, real_data_dir: Path
) -> None:
    config = tmp_path / "study.toml"
    settings = (
        'max_train = 2000\nepochs = [1]\npruner = "none"\n'
        "[heinit]\nsamples = 30000\nbatches = 30\ndepth = 10\n"
    )
    config.write_text(f"[tune]\nn_trials = 40\n{settings}")  # more than it can run before the kill
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "fashionlab",
        "run",
        "--quick",
        "--out",
        str(run_dir),
        "--config",
        str(config),
        "--data-dir",
        str(real_data_dir),
        "--no-progress",
        "--jobs",
        "1",
        "--only",
        "heinit",
        "--only",
        "tune",
    ]
    db = run_dir / "tune" / "study.db"

    def two_done_and_every_running_trial_named() -> bool:
        return len(_finished_trials(db)) >= 2 and None not in running_owners(db).values()

    with started(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        # Stopped at a checked state, then killed like a power cut: no cleanup code runs.
        freeze_when(process.pid, two_done_and_every_running_trial_named, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = _finished_trials(db)
    assert len(before) >= 2
    assert (run_dir / "heinit" / "stage.json").is_file() and not (
        run_dir / "tune" / "stage.json"
    ).exists()

    target = len(before) + 2
    config.write_text(f"[tune]\nn_trials = {target}\n{settings}")
    study = load_study_config(config, quick=True, seed=0, device="cpu", data_dir=str(real_data_dir))
    outcomes = {
        o.name: o.status
        for o in run_study(
            run_dir, study, only=["heinit", "tune"], progress=False, echo=lambda line: None
        )
    }
    assert outcomes == {"heinit": "cached", "tune": "ran"}
    after = _finished_trials(db)
    assert set(before) <= set(after), "a finished trial was lost"
    assert len(after) == target
    best = read_json(run_dir / "tune" / "best.json")
    assert best["counts"]["finished"] == target
