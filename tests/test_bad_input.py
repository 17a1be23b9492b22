"""Every bad value and broken file gets one ``error:`` line before work starts, in any locale and
with any HOME: seeds, counts of threads and processes, sizes, enqueued settings, truncated JSON
and SQLite files of a run folder."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fashionlab.canonical import Canonical
from fashionlab.cli import main
from fashionlab.locks import MARK_FILE
from fashionlab.pipeline import Stage, StudyConfig, run_stages
from fashionlab.validation import SEED_LIMIT, parallel_limit

# A He-init stage of about a second.
TINY_HEINIT = ["--samples", "30000", "--batches", "30", "--depth", "2", "--width", "8"]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _fashionlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m fashionlab ARGS`` with stdout and stderr piped (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "fashionlab", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


# --- seeds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [SEED_LIMIT, 2**64, -1])
@pytest.mark.parametrize(
    "command", [["run", "--quick"], ["heinit"], ["tune"], ["train"], ["landscape"], ["report"]]
)
def test_a_seed_the_generators_refuse_is_one_line_in_every_command(
    command: list[str], seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main([*command, "--seed", str(seed), "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--seed" in line and str(SEED_LIMIT - 1) in line and str(seed) in line
    assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize(
    "table",
    [
        "[heinit]\nseed = {seed}",
        "[tune]\nseed = {seed}",
        "[tune_variant]\nseed = {seed}",
        "[classifier]\nseeds = [{seed}]",
        "[variant]\nseeds = [1, {seed}]",
        "[landscape]\nseed = {seed}",
        "[landscape]\ndata_seed = {seed}",
        "[landscape.train]\nseed = {seed}",
        "[autoencoder]\nseed = {seed}",
    ],
)
def test_a_seed_the_generators_refuse_in_a_config_file_is_one_line_before_any_stage(
    table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "seed.toml"
    config.write_text(table.format(seed=2**64) + "\n")
    out = tmp_path / "run"
    assert main(["run", "--quick", "--config", str(config), "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    stage = table[1:].split("]")[0].split(".")[0]
    assert str(2**64) in line and str(SEED_LIMIT - 1) in line and f"[{stage}]" in line
    assert not out.exists()


# --- threads, processes, sizes ----------------------------------------------------------------


def test_thread_and_process_counts_beyond_the_cpus_are_refused_naming_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = parallel_limit()
    out = tmp_path / "run"
    for argv in (
        ["tune", "--workers", "1000"],
        ["landscape", "--threads", "1000"],
        ["run", "--quick", "--jobs", "1000"],
    ):
        assert main([*argv, "--out", str(out), "--no-progress"]) == 1, argv
        line = _one_error_line(capsys.readouterr().err)
        assert "1000" in line and f"at most {limit}" in line, line
    for table in (
        "[autoencoder]\nnum_workers = 1000",
        "[tune]\nworkers = 1000",
        "[tune_variant]\nthreads = 1000",
        "[landscape]\nthreads = 1000",
    ):
        config = tmp_path / "counts.toml"
        config.write_text(table + "\n")
        assert main(["run", "--quick", "--config", str(config), "--out", str(out)]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert "1000" in line and f"at most {limit}" in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    "option", [["--width", "10000000"], ["--fan-in", "1000000"], ["--samples", str(10**18)]]
)
def test_heinit_sizes_beyond_the_memory_are_refused(
    option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["heinit", *option, "--out", str(tmp_path / "run")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "of memory" in line and "available" in line and option[0] in line
    assert not (tmp_path / "run" / "heinit").exists()


# --- enqueued settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        '{"lr": NaN}',
        '{"lr": -1}',
        '{"lr": Infinity}',
        '{"lr": 0}',
        '{"units": 1000}',
        '{"momentum": 0.5}',
        '{"l2": -0.001}',
        '{"batch_size": 0}',
    ],
)
def test_an_enqueued_setting_outside_the_search_space_is_one_line(
    setting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (key,) = json.loads(setting)
    out = tmp_path / "run"
    assert main(["tune", "--enqueue", setting, "--out", str(out), "--no-progress"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "enqueued setting" in line and key in line
    assert not (out / "tune").exists()
    out = tmp_path / "run2"
    config = tmp_path / "enqueue.toml"
    value = setting.split(":")[1].strip(" }").replace("NaN", "nan").replace("Infinity", "inf")
    config.write_text(f"[tune]\nenqueue = [{{{key} = {value}}}]\n")
    assert main(["run", "--quick", "--config", str(config), "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: [tune] enqueued setting") and key in line
    assert not out.exists()


def test_an_enqueued_setting_inside_the_space_is_accepted() -> None:
    from fashionlab.experiments.classifier import TuneConfig

    plain = {
        "hidden_layers": 4,
        "units": 40,
        "lr": 0.5,
        "l2": 1e-6,
        "momentum": 0,
        "batch_size": 16,
    }
    assert TuneConfig(enqueue=[plain]).enqueue == (plain,)
    variant = {"activation": "prelu", "batchnorm": True, "dropout": 0.5, "units": 512}
    assert TuneConfig(space="variant", enqueue=[variant]).enqueue == (variant,)


# --- broken files of a run folder ---------------------------------------------------------------


def _write_run(folder: Path) -> None:
    """A run folder as far as the report reads it: run.json, a test.json, a metrics.json, and
    the mark that a folder fashionlab made carries."""
    (folder / "classifier").mkdir(parents=True)
    (folder / MARK_FILE).touch()
    (folder / "autoencoder").mkdir()
    (folder / "run.json").write_text('{"seed": 0, "device": "cpu", "config": {}}\n')
    (folder / "classifier" / "test.json").write_text('{"test_accuracy": 0.5, "seeds": [0]}\n')
    (folder / "autoencoder" / "metrics.json").write_text('{"test_mse": 0.01}\n')


@pytest.mark.slow  # a subprocess (git config user.name)
@pytest.mark.parametrize("broken", ["run.json", "classifier/test.json", "autoencoder/metrics.json"])
def test_report_on_a_truncated_json_file_names_the_file(
    broken: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "run"
    _write_run(folder)
    path = folder / broken
    path.write_bytes(path.read_bytes()[:12])  # cut short, as by a crash
    assert main(["report", str(folder)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{path} is broken: not valid JSON" in line and "fix:" in line
    assert not (folder / "report.pdf").exists()


@dataclasses.dataclass(frozen=True)
class _NoSettings(Canonical):
    """A stage config without a setting."""


def _resolve_nothing(study: StudyConfig) -> _NoSettings:
    return _NoSettings()


def _write_study(out: Path, config: _NoSettings, ctx: Any) -> dict[str, Any]:
    """A stage with an SQLite file of many pages (as the tuning study) and one output."""
    out.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(out / "study.db") as connection:
        connection.execute("CREATE TABLE trials (number INTEGER, blob BLOB)")
        connection.executemany(
            "INSERT INTO trials VALUES (?, ?)", [(k, bytes(2000)) for k in range(100)]
        )
    connection.close()
    (out / "best.json").write_text('{"number": 0}\n')
    return {"headline": "written"}


@pytest.mark.slow  # a subprocess, or the real data's checksums
def test_a_truncated_sqlite_file_runs_its_stage_again_keeping_the_old_folder(
    tmp_path: Path, real_data_dir: Path
) -> None:
    stages = (Stage("study", (), _NoSettings, _resolve_nothing, _write_study, "a study"),)
    study = StudyConfig(device="cpu", data_dir=str(real_data_dir))
    folder = tmp_path / "run"
    (first,) = run_stages(folder, study, stages, progress=False, echo=lambda line: None)
    assert first.status == "ran"
    database = folder / "study" / "study.db"
    cut = database.read_bytes()[: database.stat().st_size // 2]
    database.write_bytes(cut)
    lines: list[str] = []
    (second,) = run_stages(folder, study, stages, progress=False, echo=lines.append)
    assert second.status == "ran"
    said = [line for line in lines if "study/study.db is not a usable SQLite database" in line]
    assert len(said) == 1 and "running it again" in said[0] and "study.previous" in said[0]
    assert (folder / "study.previous" / "study.db").read_bytes() == cut  # kept, not deleted
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM trials").fetchone()[0] == 100
    connection.close()


# --- any locale, any HOME, piped output -----------------------------------------------------------


@pytest.mark.slow  # a subprocess, or the real data's checksums
def test_an_ascii_locale_degrades_the_output_instead_of_crashing(tmp_path: Path) -> None:
    result = _fashionlab(
        "heinit", *TINY_HEINIT, "--out", str(tmp_path), env={"LC_ALL": "C", "PYTHONUTF8": "0"}
    )
    assert result.returncode == 0, result.stderr
    assert "Var[Sum_j w_j x_j]" in result.stdout and "+- 3 SE" in result.stdout
    assert "Traceback" not in result.stderr
    assert (tmp_path / "heinit" / "results.json").is_file()


@pytest.mark.slow  # a subprocess, or the real data's checksums
def test_an_unwritable_home_is_found_at_start_with_the_fix(
    tmp_path: Path, real_data_dir: Path
) -> None:
    home = tmp_path / "home"
    home.write_text("a file where a folder should be: nothing can be written under it\n")
    env = {"HOME": str(home), "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": "", "MPLCONFIGDIR": ""}
    out = tmp_path / "run"
    result = _fashionlab(
        "run", "--quick", "--data-dir", str(real_data_dir), "--out", str(out), env=env
    )
    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "cannot be written" in line and "XDG_CACHE_HOME" in line and "loader" in line
    assert not out.exists()
    # A stage that draws figures says nothing about matplotlib's folder.
    result = _fashionlab("heinit", *TINY_HEINIT, "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert "matplotlib" not in result.stderr.lower() and "MPLCONFIGDIR" not in result.stderr


@pytest.mark.slow  # a subprocess, or the real data's checksums
def test_progress_bars_stay_out_of_a_piped_log(tmp_path: Path) -> None:
    result = _fashionlab("heinit", *TINY_HEINIT, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "it/s" not in result.stderr
