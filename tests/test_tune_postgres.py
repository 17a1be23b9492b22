"""Two `fashionlab tune` processes share one study on a real PostgreSQL server started here.

The server (Debian's ``postgresql``) is initialised in a temporary folder, listens on 127.0.0.1
at a free port and on a Unix socket in that folder, and is stopped in the fixture's teardown.
Running as root, the server runs as the ``postgres`` user (``runuser``), because PostgreSQL
refuses to run as root. Missing binaries are a failure under ``CI`` and a skip elsewhere.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from fashionlab.atomic import read_json

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PASSWORD_ROLE, ROLE_PASSWORD = "alice", "Alice-pg-pw-93"
SECRET, SECRET2, SECRET3 = "s3cret-Pw-1", "s3cret-Pw-2", "s3cret-Pw-3"


def _binaries() -> Path:
    version = lambda path: [int(part) for part in re.findall(r"\d+", Path(path).parent.parent.name)]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if not found:
        message = (
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh server and database; yields a SQLAlchemy URL; stops the server afterwards."""
    bin_dir = _binaries()
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="fashionlab-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.fail("running as root needs `runuser` to start PostgreSQL as the postgres user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, sockets, log = folder / "data", folder / "sock", folder / "server.log"
    run = lambda *cmd: subprocess.run(
        as_user + [str(c) for c in cmd], check=True, capture_output=True, text=True, timeout=120
    )
    port = _free_port()
    started = False
    try:
        run("mkdir", sockets)
        run(
            bin_dir / "initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        # The role "alice" signs in with a password (scram), the rest as trusted before.
        hba = data / "pg_hba.conf"
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        options = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c max_connections=50"
        run(bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60", "start")
        started = True
        run(
            bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "fashionlab_test"
        )
        role = f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'"
        run(bin_dir / "psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-c", role)
        run(
            bin_dir / "createdb",
            *("-h", "127.0.0.1", "-p", port, "-U", "postgres", "-O", PASSWORD_ROLE),
            f"{PASSWORD_ROLE}_db",
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/fashionlab_test"
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text() if log.exists() else ""
        pytest.fail(f"PostgreSQL setup failed: {exc.cmd}: {exc.stderr}\n{server_log[-2000:]}")
    finally:
        if started:
            subprocess.run(
                as_user
                + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_study_on_postgresql(
    postgres_url: str, tmp_path: Path, real_data_dir: Path
) -> None:
    study_name, first_target, second_target = "shared-plain", 6, 8
    command = [
        sys.executable,
        "-m",
        "fashionlab",
        "tune",
        "--storage",
        postgres_url,
        "--study",
        study_name,
        "--max-train",
        "300",
        "--epochs",
        "1,2",
        "--data-dir",
        str(real_data_dir),
        "--no-retrain",
        "--no-progress",
        "--device",
        "cpu",
    ]
    # The same command on both "machines" (same seed): the study, not the seed, keeps them apart.
    # The second asks for more finished trials than the first, so it takes part whichever starts
    # first and however fast the first one is.
    targets = (first_target, second_target)
    workers = [
        subprocess.Popen(
            command + ["--trials", str(target), "--out", str(tmp_path / f"w{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for i, target in enumerate(targets)
    ]
    outputs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=400)
            assert worker.returncode == 0, stderr
            outputs.append((worker.pid, stdout))
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # every trial recorded once, no gaps
    assert len({t._trial_id for t in trials}) == len(trials)
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "FAIL" not in states
    # Each asks for a trial only while fewer than its target are finished or running; two may
    # ask at once, so at most one more.
    assert second_target <= sum(s in ("COMPLETE", "PRUNED") for s in states) <= second_target + 1
    # Each process ran the trials it says it ran, and the database holds each of them once.
    by_worker = {}
    for trial in trials:
        by_worker.setdefault(trial.user_attrs["worker"].rsplit(":", 1)[1], []).append(trial.number)
    for pid, stdout in outputs:
        ran = int(re.search(r"this command ran (\d+)", stdout).group(1))
        assert len(by_worker.get(str(pid), [])) == ran
    assert sum(len(v) for v in by_worker.values()) == len(trials)
    assert str(workers[1].pid) in by_worker  # the second process took part
    # A third command on the finished study runs nothing; what it exports is the database's.
    third = subprocess.run(
        command + ["--trials", str(second_target), "--out", str(tmp_path / "w2")],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert third.returncode == 0, third.stderr
    assert "this command ran 0" in third.stdout
    best = study.best_trial
    exported = read_json(tmp_path / "w2" / "tune" / "best.json")
    assert (exported["number"], exported["value"], exported["searched"]) == (
        best.number,
        best.value,
        best.params,
    )
    listed = read_json(tmp_path / "w2" / "tune" / "trials.json")["trials"]
    assert [(t["number"], t["value"]) for t in listed] == [(t.number, t.value) for t in trials]
    assert "postgresql+psycopg://postgres@127.0.0.1" in exported["storage"]


def _holding(folder: Path, *secrets: str) -> list[str]:
    """The files under ``folder`` (any kind, binary too) whose bytes hold one of ``secrets``."""
    return [
        str(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets)
    ]


def _fashionlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fashionlab", *args],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )


def test_a_storage_password_given_in_a_config_file_is_written_nowhere(
    postgres_url: str, tmp_path: Path, real_data_dir: Path
) -> None:
    def config(password: str, host: str = "127.0.0.1") -> Path:
        # The server trusts "postgres" whatever its password: the URL works as given.
        url = postgres_url.replace("postgres@127.0.0.1", f"postgres:{password}@{host}")
        url += f"?password={password}&sslpassword={SECRET2}"
        path = tmp_path / f"storage-{len(list(tmp_path.glob('*.toml')))}.toml"
        path.write_text(
            f'[tune]\nstorage = "{url}"\nstudy_name = "secret-plain"\nn_trials = 2\n'
            "max_train = 300\nepochs = [1, 2]\nreference = false\n"
        )
        return path

    run_dir = tmp_path / "run"
    common = ["--quick", "--only", "tune", "--out", str(run_dir), "--data-dir", str(real_data_dir)]
    common += ["--no-progress", "--jobs", "1", "--device", "cpu"]
    first = _fashionlab("run", "--config", str(config(SECRET)), *common)
    assert first.returncode == 0, first.stderr
    report = _fashionlab("report", "--out", str(run_dir))
    assert report.returncode == 0, report.stderr
    pdf_text = subprocess.run(
        ["pdftotext", str(run_dir / "report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    shown = "postgres:***@127.0.0.1"
    assert shown in read_json(run_dir / "tune" / "stage.json")["config"]["storage"]
    for name in ("best.json", "trials.json"):
        storage = read_json(run_dir / "tune" / name)["storage"]
        assert shown in storage and "password=***&sslpassword=***" in storage, storage
    everything = first.stdout + first.stderr + report.stdout + report.stderr + pdf_text
    assert SECRET not in everything and SECRET2 not in everything
    assert _holding(run_dir, SECRET, SECRET2) == []
    # Another password is the same study: the stage stays cached. Another host is not.
    again = _fashionlab("run", "--config", str(config(SECRET3)), *common)
    assert again.returncode == 0 and "[tune] cached" in again.stdout, again.stdout + again.stderr
    moved = _fashionlab("run", "--config", str(config(SECRET, host="localhost")), *common)
    assert moved.returncode == 1 and "--force tune" in moved.stderr, moved.stderr
    assert SECRET not in moved.stdout + moved.stderr and SECRET2 not in moved.stderr
    assert _holding(run_dir, SECRET, SECRET2, SECRET3) == []


def test_a_password_from_pgpassword_keeps_it_off_the_command_line(
    postgres_url: str, tmp_path: Path, real_data_dir: Path
) -> None:
    url = postgres_url.replace("postgres@", f"{PASSWORD_ROLE}@").replace(
        "/fashionlab_test", f"/{PASSWORD_ROLE}_db"
    )
    command = ["tune", "--storage", url, "--study", "pgpassword", "--trials", "1"]
    command += ["--max-train", "300", "--epochs", "1", "--data-dir", str(real_data_dir)]
    command += ["--no-retrain", "--no-progress", "--device", "cpu"]
    # No ~/.pgpass of the machine's user may answer for it: only what the test gives.
    env = os.environ | {"PGPASSFILE": str(tmp_path / "no-pgpass")}
    env.pop("PGPASSWORD", None)
    refused = _fashionlab(*command, "--out", str(tmp_path / "without"), env=env)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open storage"), refused.stderr
    done = _fashionlab(
        *command, "--out", str(tmp_path / "with"), env=env | {"PGPASSWORD": ROLE_PASSWORD}
    )
    assert done.returncode == 0, done.stderr
    assert read_json(tmp_path / "with" / "tune" / "best.json")["counts"]["finished"] == 1
    assert ROLE_PASSWORD not in done.stdout + done.stderr
    assert _holding(tmp_path, ROLE_PASSWORD) == []
