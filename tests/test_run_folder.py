"""A run folder under faults: full and read-only disks, changed or missing outputs, changed
settings, and two writers at once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fashionlab.atomic import read_json
from fashionlab.cli import main
from fashionlab.errors import ConfigError
from fashionlab.locks import lock_folder
from fashionlab.pipeline import StudyConfig, load_study_config, run_study

pytestmark = pytest.mark.slow

TINY_HEINIT = "[heinit]\nsamples = 30000\nbatches = 30\ndepth = 10\n"
TINY_TUNE = ["--trials", "1", "--max-train", "1000", "--epochs", "1", "--pruner", "none"]
TINY_TUNE += ["--no-retrain", "--no-progress"]


@pytest.fixture
def heinit_args(tmp_path: Path, real_data_dir: Path) -> list[str]:
    """``fashionlab run`` options for a seconds-long study of the He-init stage alone."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_HEINIT)
    return [
        "--quick",
        "--config",
        str(config),
        "--only",
        "heinit",
        "--data-dir",
        str(real_data_dir),
        "--no-progress",
        "--jobs",
        "1",
        "--device",
        "cpu",
    ]


def _study(heinit_args: list[str], **fields: object) -> StudyConfig:
    config = heinit_args[heinit_args.index("--config") + 1]
    data_dir = heinit_args[heinit_args.index("--data-dir") + 1]
    settings = {"quick": True, "device": "cpu", "data_dir": data_dir, **fields}
    return load_study_config(config, **settings)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".fashionlab.lock"
    }


@pytest.fixture
def small_disk() -> Iterator[Callable[..., Path]]:
    """Mount tiny tmpfs file systems (root only); skip where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str, *options: str) -> Path:
        point = Path(tempfile.mkdtemp(prefix="fashionlab-disk-"))
        spec = ",".join([f"size={size}", *options])
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", spec, "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            point.rmdir()
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:  # lazily: a database of an in-process study may still be open
        subprocess.run(["umount", "--lazy", str(point)], check=False)
        point.rmdir()


# --- 3. OS and database errors: one line, the path and the cause ----------------------------------


def test_full_disk_is_one_error_line_and_leaves_no_temp_files(
    small_disk, heinit_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = small_disk("64k") / "run"  # room for run.json, not for the figures
    assert main(["run", "--out", str(run_dir), *heinit_args]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "no space left on device" in line and str(run_dir / "heinit") in line, line
    assert not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / "heinit" / "stage.json").exists()


def test_read_only_folder_is_one_error_line(
    small_disk, heinit_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = small_disk("64k", "ro") / "run"
    assert main(["run", "--out", str(run_dir), *heinit_args]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "read-only file system" in line and str(run_dir) in line, line


def test_full_disk_during_tuning_names_the_database(small_disk, real_data_dir: Path) -> None:
    disk = small_disk("2m")
    # In fresh processes: Optuna's log handler keeps the stderr of the process it started in.
    tune = [
        sys.executable,
        "-m",
        "fashionlab",
        "tune",
        "--out",
        str(disk / "run"),
        "--max-train",
        "1000",
        "--epochs",
        "1",
        "--pruner",
        "none",
        "--no-retrain",
        "--no-progress",
        "--device",
        "cpu",
        "--data-dir",
        str(real_data_dir),
    ]
    first = subprocess.run([*tune, "--trials", "1"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    stats = os.statvfs(disk)
    with open(disk / "filler", "wb") as filler:  # leave 64 KiB: the study opens, no trial fits
        filler.write(bytes(stats.f_bavail * stats.f_frsize - 64 * 1024))
    second = subprocess.run([*tune, "--trials", "3"], capture_output=True, text=True)
    err = second.stderr
    assert second.returncode == 1, err
    assert "Traceback" not in err and "Should not reach" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(disk / "run" / "tune" / "study.db") in errors[0], err
    assert "full" in errors[0] or "disk" in errors[0], err


_KILLED_WRITER = """
import os, signal, sys
from fashionlab.atomic import atomic_path
from fashionlab.locks import lock_folder

target = os.path.join(sys.argv[1], "heinit", "results.json")
with lock_folder(sys.argv[1]), atomic_path(target) as tmp:
    tmp.write_text("half-writ")
    print(tmp, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # a power cut: no cleanup code runs
"""


def test_a_killed_writers_temp_file_is_removed_by_the_next_run_and_only_it(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(run_dir)], capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr
    left = Path(killed.stdout.strip())
    assert left.read_text() == "half-writ" and left.parent == run_dir / "heinit"
    users = [run_dir / ".draft.tmp", run_dir / "heinit" / ".notes.tmp"]
    for path in users:
        path.write_text("mine")
    with lock_folder(run_dir):
        assert not left.exists()
    assert all(path.read_text() == "mine" for path in users)


def _all_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_users_hidden_temp_files_survive_every_command(
    tmp_path: Path, heinit_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(["run", "--out", str(run_dir), *heinit_args]) == 0
    users = [run_dir / ".draft.tmp", run_dir / "projects" / "thesis" / ".ch1.tex.tmp"]
    for path in users:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    assert main(["run", "--out", str(run_dir), *heinit_args]) == 0
    assert all(path.read_text() == "mine" for path in users)
    # Every command that locks the folder, refused after it took the lock (a bad value).
    for command in (
        ["heinit", "--samples", "10"],
        ["tune", "--trials", "0"],
        ["train", "--epochs", "0"],
        ["landscape", "--resolution", "0"],
        ["autoencoder", "--epochs", "0"],
    ):
        capsys.readouterr()
        assert main([*command, "--out", str(run_dir), "--device", "cpu"]) == 1, command
        assert "must be" in _one_error_line(capsys.readouterr().err), command
        assert all(path.read_text() == "mine" for path in users), command
    assert main(["report", str(run_dir), "-o", str(tmp_path / "copy.pdf")]) == 0
    assert all(path.read_text() == "mine" for path in users)


@pytest.mark.parametrize(
    ("foreign", "command"),
    [
        ("tune/best.json", ["run"]),
        ("report.pdf", ["run"]),
        ("report.pdf", ["heinit", "--samples", "30000", "--batches", "30", "--depth", "4"]),
        ("tune/best.json", ["tune", *TINY_TUNE]),
        ("train/model.pt", ["train", "--epochs", "1", "--max-train", "1000"]),
        ("report.pdf", ["report"]),
    ],
)
def test_a_folder_with_files_fashionlab_did_not_write_is_refused(
    tmp_path: Path,
    heinit_args: list[str],
    capsys: pytest.CaptureFixture[str],
    foreign: str,
    command: list[str],
) -> None:
    run_dir = tmp_path / "mine"
    (run_dir / foreign).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / foreign).write_bytes(b"a user's own file")
    before = _all_files(run_dir)
    data = ["--data-dir", heinit_args[heinit_args.index("--data-dir") + 1]]
    options = {"run": heinit_args, "report": []}.get(command[0], ["--device", "cpu", *data])
    assert main([*command, "--out", str(run_dir), *options]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "did not write" in line and "empty or new folder" in line and "--force" in line, line
    assert _all_files(run_dir) == before  # not even a lock file


def test_force_keeps_every_foreign_file_it_replaces_as_previous(
    tmp_path: Path, heinit_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "mine"
    (run_dir / "tune").mkdir(parents=True)
    (run_dir / "tune" / "best.json").write_text("my tuning")
    (run_dir / "report.pdf").write_text("my report")
    (run_dir / "notes.txt").write_text("my notes")
    assert main(["run", "--out", str(run_dir), "--force", "all", *heinit_args]) == 0
    assert (run_dir / "tune.previous" / "best.json").read_text() == "my tuning"
    assert (run_dir / "report.pdf.previous").read_text() == "my report"
    assert (run_dir / "notes.txt").read_text() == "my notes"  # not written: left alone
    assert (run_dir / "heinit" / "stage.json").is_file()
    assert main(["run", "--out", str(run_dir), *heinit_args]) == 0  # now ours: cached

    other = tmp_path / "other"
    (other / "heinit").mkdir(parents=True)
    (other / "heinit" / "results.json").write_text("my results")
    stage = ["heinit", "--out", str(other), "--samples", "30000", "--batches", "30", "--depth", "4"]
    assert main([*stage, "--device", "cpu"]) == 1
    assert main([*stage, "--device", "cpu", "--force"]) == 0
    assert (other / "heinit.previous" / "results.json").read_text() == "my results"
    assert read_json(other / "heinit" / "results.json")["identities"]

    capsys.readouterr()
    copy = tmp_path / "thesis.pdf"
    copy.write_text("my thesis")
    assert main(["report", str(run_dir), "-o", str(copy)]) == 1
    assert "not a report fashionlab wrote" in _one_error_line(capsys.readouterr().err)
    assert copy.read_text() == "my thesis"
    assert main(["report", str(run_dir), "-o", str(copy), "--force"]) == 0
    assert (tmp_path / "thesis.pdf.previous").read_text() == "my thesis"
    assert main(["report", str(run_dir), "-o", str(copy)]) == 0  # its own report: replaced
    assert not (tmp_path / "thesis.pdf.previous.2").exists()


# --- 6. the cache checks its outputs; changed settings are refused before anything is written -----


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stage_json_records_size_and_sha256_of_every_output(
    tmp_path: Path, heinit_args: list[str]
) -> None:
    run_dir = tmp_path / "run"
    run_study(run_dir, _study(heinit_args), only=["heinit"], progress=False, echo=lambda line: None)
    outputs = read_json(run_dir / "heinit" / "stage.json")["outputs"]
    files = sorted(p for p in (run_dir / "heinit").iterdir() if p.name != "stage.json")
    assert sorted(outputs) == [f"heinit/{p.name}" for p in files]
    for path in files:
        expected = {"size": path.stat().st_size, "sha256": _sha256(path)}
        assert outputs[f"heinit/{path.name}"] == expected


def test_a_missing_or_changed_output_runs_its_stage_again(
    tmp_path: Path, heinit_args: list[str]
) -> None:
    run_dir = tmp_path / "run"
    study = _study(heinit_args)

    def run() -> tuple[str, list[str]]:
        lines: list[str] = []
        outcomes = run_study(run_dir, study, only=["heinit"], progress=False, echo=lines.append)
        return outcomes[0].status, lines

    run()
    figure = run_dir / "heinit" / "identities.png"
    figure.unlink()
    status, lines = run()
    assert status == "ran"
    assert any("heinit/identities.png is missing" in line for line in lines), lines
    assert figure.is_file()

    results = run_dir / "heinit" / "results.json"
    original = results.read_bytes()
    swapped = original.replace(b'"holds": true', b'"holds": fals', 1)  # same size, other content
    assert len(swapped) == len(original) and swapped != original
    results.write_bytes(swapped)
    status, lines = run()
    assert status == "ran"
    assert any("heinit/results.json has changed" in line for line in lines), lines
    assert results.read_bytes() != swapped and read_json(results)["identities"]
    assert run()[0] == "cached"


def test_changed_settings_are_refused_before_anything_is_written(
    tmp_path: Path, heinit_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(["run", "--out", str(run_dir), "--seed", "0", *heinit_args]) == 0
    before = _snapshot(run_dir)
    capsys.readouterr()
    assert main(["run", "--out", str(run_dir), "--seed", "1", *heinit_args]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "seed 0 (asked: 1)" in line and "--force heinit" in line, line
    assert _snapshot(run_dir) == before  # run.json too: nothing was written

    # The flag in the message redoes it; nothing is deleted, even by a second force.
    assert main(["run", "--out", str(run_dir), "--seed", "1", "--force", "all", *heinit_args]) == 0
    assert read_json(run_dir / "heinit" / "stage.json")["config"]["seed"] == 1
    assert read_json(run_dir / "heinit.previous" / "stage.json")["config"]["seed"] == 0
    assert read_json(run_dir / "run.json")["seed"] == 1
    run_study(
        run_dir,
        _study(heinit_args, seed=1),
        force=["heinit"],
        only=["heinit"],
        progress=False,
        echo=lambda line: None,
    )
    assert read_json(run_dir / "heinit.previous" / "stage.json")["config"]["seed"] == 1
    assert read_json(run_dir / "heinit.previous.2" / "stage.json")["config"]["seed"] == 0


def test_changed_settings_refused_by_the_library_too(
    tmp_path: Path, heinit_args: list[str]
) -> None:
    run_dir = tmp_path / "run"
    run_study(run_dir, _study(heinit_args), only=["heinit"], progress=False, echo=lambda line: None)
    data_dir = heinit_args[heinit_args.index("--data-dir") + 1]
    other = StudyConfig(
        quick=True,
        device="cpu",
        data_dir=data_dir,
        overrides={"heinit": {"samples": 30000, "batches": 30, "depth": 12}},
    )
    with pytest.raises(ConfigError, match=r"depth 10 \(asked: 12\).*--force heinit"):
        run_study(run_dir, other, only=["heinit"], progress=False, echo=lambda line: None)


# --- 7. one writer per run folder ----------------------------------------------------------------


def test_a_second_writer_is_refused_and_told_who_holds_the_folder(
    tmp_path: Path, heinit_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    with lock_folder(run_dir):
        assert main(["run", "--out", str(run_dir), *heinit_args]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert f"pid {os.getpid()}" in line and "--wait" in line, line
        assert main(["heinit", "--out", str(run_dir), "--device", "cpu"]) == 1  # a stage on its own
        assert f"pid {os.getpid()}" in _one_error_line(capsys.readouterr().err)
    assert not (run_dir / "heinit").exists()


def test_wait_runs_once_the_holder_lets_go(tmp_path: Path, heinit_args: list[str]) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "fashionlab",
        "run",
        "--out",
        str(run_dir),
        "--wait",
        *heinit_args,
    ]
    with lock_folder(run_dir):
        waiter = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            for line in waiter.stderr:  # the waiter says it waits, then blocks until we let go
                if "is in use by" in line and "waiting" in line:
                    break
            else:
                pytest.fail(f"the second run did not wait; exit {waiter.wait()}")
            assert waiter.poll() is None
            assert not (run_dir / "heinit").exists()
        except BaseException:
            waiter.kill()
            raise
    rest = waiter.communicate(timeout=300)[1]
    assert waiter.returncode == 0, rest
    assert (run_dir / "heinit" / "stage.json").is_file()


# --- 8. no password is written down -----------------------------------------------------------

SECRET, SECRET2 = "s3cret-Pw-1", "s3cret-Pw-2"


def _holding(folder: Path, *secrets: str) -> list[str]:
    """The files under ``folder`` (any kind, binary too) whose bytes hold one of ``secrets``."""
    return [
        str(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets)
    ]


def _with_config(args: list[str], config: Path, only: str) -> list[str]:
    args = list(args)
    args[args.index("--config") + 1] = str(config)
    args[args.index("--only") + 1] = only
    return args


def test_a_storage_password_in_a_config_file_is_in_no_file_and_no_output(
    tmp_path: Path, heinit_args: list[str]
) -> None:
    config = tmp_path / "secret.toml"
    # Port 1 of the loopback: refused at once, after the run folder's records are written.
    url = f"postgresql://ann:{SECRET}@127.0.0.1:1/study?sslmode=prefer&sslpassword={SECRET2}"
    config.write_text(TINY_HEINIT + f'[tune]\nstorage = "{url}"\n')
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "fashionlab", "run", "--out", str(run_dir)]
        + _with_config(heinit_args, config, "tune"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    line = _one_error_line(done.stderr)
    assert "storage postgresql+psycopg://ann:***@127.0.0.1:1/study?" in line, line
    assert SECRET not in done.stdout + done.stderr and SECRET2 not in done.stdout + done.stderr
    assert _holding(run_dir, SECRET, SECRET2) == []
    shown = "postgresql://ann:***@127.0.0.1:1/study?sslmode=prefer&sslpassword=***"
    assert read_json(run_dir / "run.json")["config"]["tune"]["storage"] == shown


def test_another_password_keeps_the_tuning_cache_key_another_host_does_not(
    tmp_path: Path, heinit_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, run_dir = tmp_path / "storage.toml", tmp_path / "run"

    def tune_hash(url: str) -> str:
        config.write_text(TINY_HEINIT + f'[tune]\nstorage = "{url}"\n')
        assert (
            main(["run", "--out", str(run_dir), *_with_config(heinit_args, config, "heinit")]) == 0
        )
        assert SECRET not in capsys.readouterr().out
        return read_json(run_dir / "run.json")["stage_hashes"]["tune"]

    first = tune_hash(f"postgresql://ann:{SECRET}@db-a.lab/study")
    assert tune_hash(f"postgresql://ann:{SECRET2}@db-a.lab/study") == first
    assert tune_hash(f"postgresql://ann@db-a.lab/study?password={SECRET}") == tune_hash(
        f"postgresql://ann@db-a.lab/study?password={SECRET2}"
    )
    assert tune_hash(f"postgresql://ann:{SECRET}@db-b.lab/study") != first
    assert _holding(run_dir, SECRET, SECRET2) == []


def test_the_lock_file_is_private_and_neither_it_nor_the_refusal_shows_a_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import stat

    from fashionlab.errors import FolderInUseError

    run_dir = tmp_path / "run"
    code = (
        "import sys\nfrom fashionlab.locks import lock_folder\n"
        "with lock_folder(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    storage = f"--storage=postgresql://ann:{SECRET}@db.lab/study"
    query = f"postgresql://ann@db.lab/study?password={SECRET2}"
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir), storage, query],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"  # the holder has written its record
        lock = run_dir / ".fashionlab.lock"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        command = json.loads(lock.read_text())["command"]
        assert "--storage=postgresql://ann:***@db.lab/study" in command, command
        assert "study?password=***" in command
        assert _holding(run_dir, SECRET, SECRET2) == []
        with pytest.raises(FolderInUseError) as refused, lock_folder(run_dir):
            pass
        assert f"pid {holder.pid}" in str(refused.value)
        assert SECRET not in str(refused.value) and SECRET2 not in str(refused.value)
        assert main(["heinit", "--out", str(run_dir), "--device", "cpu"]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert "in use by" in line and SECRET not in line and SECRET2 not in line
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
