"""Stress the multi-process tuning: repeat small studies and kills, count the rounds that fail.

Every round runs, in a fresh folder, (1) ``fashionlab tune --workers 2`` on SQLite, (2) two
``fashionlab tune`` processes on one PostgreSQL study (a throwaway server on 127.0.0.1, started
here and stopped at the end), (3) a tuning process killed with SIGKILL mid-study, then resumed.
Each step checks the study: no trial lost, none left RUNNING, none failed that was not cut short,
every cut-short trial retried once, exit codes 0 and no traceback. ``--load`` runs the rounds
beside a CPU load (one busy process per core) and a disk load (a 64 MiB file rewritten with
fsync), both ended and removed at the end.

    .venv/bin/python benchmarks/stress_workers.py                # 20 rounds
    .venv/bin/python benchmarks/stress_workers.py --rounds 3 --load
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path

TUNE = [
    "--max-train",
    "300",
    "--epochs",
    "1",
    "--heartbeat",
    "1",
    "--no-retrain",
    "--no-progress",
    "--device",
    "cpu",
]
HANG_S = 300


class RoundFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RoundFailed(message)


def tune(*args: str) -> list[str]:
    return [sys.executable, "-m", "fashionlab", "tune", *TUNE, *args]


def run(command: list[str]) -> str:
    """Run a command to its end; its stdout; a failure or a traceback fails the round."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_S)
    check(done.returncode == 0, f"exit {done.returncode}: {done.stderr.strip()[-400:]}")
    check("Traceback" not in done.stderr, f"traceback: {done.stderr.strip()[-400:]}")
    return done.stdout


def states(db: Path) -> dict[int, str]:
    try:
        with closing(sqlite3.connect(db, timeout=30)) as connection:
            return dict(connection.execute("SELECT number, state FROM trials"))
    except sqlite3.Error:
        return {}


def unnamed_running(db: Path) -> int:
    """RUNNING trials that do not name their process yet (a kill then is the worst case)."""
    with closing(sqlite3.connect(db, timeout=30)) as connection:
        return connection.execute(
            "SELECT count(*) FROM trials t WHERE t.state = 'RUNNING' AND NOT EXISTS (SELECT 1 "
            "FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'worker')"
        ).fetchone()[0]


def retries(db: Path, number: int) -> int:
    with closing(sqlite3.connect(db, timeout=30)) as connection:
        rows = connection.execute(
            "SELECT value_json FROM trial_system_attributes WHERE key = 'failed_trial'"
        ).fetchall()
    return sum(int(value) == number for (value,) in rows)


def finished(table: dict[int, str]) -> int:
    return sum(state in ("COMPLETE", "PRUNED") for state in table.values())


# --------------------------------------------------------------------------- the three steps


def sqlite_workers(folder: Path, data: list[str]) -> None:
    run(tune("--workers", "2", "--trials", "4", "--out", str(folder), *data))
    table = states(folder / "tune" / "study.db")
    check(set(table.values()) <= {"COMPLETE", "PRUNED"}, f"SQLite states {table}")
    check(4 <= finished(table) <= 5, f"SQLite: {finished(table)} finished, expected 4 or 5")


def postgres_workers(folder: Path, data: list[str], url: str, study: str) -> None:
    common = ["--storage", url, "--study", study, *data]
    processes = [
        subprocess.Popen(
            tune(*common, "--trials", str(target), "--out", str(folder / f"pg{target}")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for target in (3, 4)
    ]
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=HANG_S)
            check(process.returncode == 0, f"exit {process.returncode}: {stderr[-400:]}")
            check("Traceback" not in stderr, f"traceback: {stderr[-400:]}")
    finally:
        for process in processes:
            kill_group(process)
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    table = {t.number: t.state.name for t in trials}
    check(set(table.values()) <= {"COMPLETE", "PRUNED"}, f"PostgreSQL states {table}")
    check(4 <= finished(table) <= 5, f"PostgreSQL: {finished(table)} finished, expected 4 or 5")
    check([t.number for t in trials] == list(range(len(trials))), "PostgreSQL: trial numbers")


def kill_and_resume(folder: Path, data: list[str]) -> None:
    command = tune("--out", str(folder), *data)
    db = folder / "tune" / "study.db"
    process = subprocess.Popen(
        command + ["--trials", "40"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + HANG_S
        while True:  # stop it when a trial has finished and every running one is named
            check(time.monotonic() < deadline and process.poll() is None, "no trial before kill")
            if finished(states(db)) >= 1 and unnamed_running(db) == 0:
                os.killpg(process.pid, signal.SIGSTOP)
                if unnamed_running(db) == 0:
                    break
                os.killpg(process.pid, signal.SIGCONT)
            time.sleep(0.1)
    finally:
        kill_group(process)
    before = states(db)
    cut = [number for number, state in before.items() if state == "RUNNING"]
    run(command + ["--trials", str(finished(before) + 1)])
    after = states(db)
    check(
        all(after[n] == s for n, s in before.items() if s in ("COMPLETE", "PRUNED")),
        "a finished trial changed",
    )
    check("RUNNING" not in after.values(), f"left RUNNING: {after}")
    check(finished(after) == finished(before) + 1, f"resumed to {finished(after)} finished")
    for number in cut:
        check(after[number] == "FAIL" and retries(db, number) == 1, f"trial {number} not retried")


# --------------------------------------------------------------------------- processes and load


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def load(enabled: bool, folder: Path) -> Iterator[None]:
    """One busy process per core and a disk writer (a 64 MiB file, fsync'd), while inside."""
    if not enabled:
        yield
        return
    burn = "while True: pass"
    disk = (
        "import os, sys\nblock = os.urandom(1 << 20)\nwhile True:\n"
        "    with open(sys.argv[1], 'wb') as fh:\n"
        "        for _ in range(64):\n            fh.write(block)\n            fh.flush()\n"
        "            os.fsync(fh.fileno())\n"
    )
    scratch = folder / "disk-load.bin"
    processes = [
        subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
        for _ in range(os.cpu_count() or 1)
    ]
    processes.append(
        subprocess.Popen([sys.executable, "-c", disk, str(scratch)], start_new_session=True)
    )
    try:
        yield
    finally:
        for process in processes:
            kill_group(process)
        scratch.unlink(missing_ok=True)


@contextmanager
def postgres(folder: Path) -> Iterator[Callable[[str], str]]:
    """A throwaway PostgreSQL server; yields a function that creates a database, returns its URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin")
    bin_dir = Path(found[-1]).parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = folder / "pg"
    home.mkdir()
    if as_user:
        shutil.chown(home, "postgres", "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def pg(*cmd: object) -> None:
        subprocess.run(
            as_user + [str(c) for c in cmd], check=True, capture_output=True, timeout=120
        )

    pg("mkdir", home / "sock")
    pg(bin_dir / "initdb", "-D", home / "data", "-U", "postgres", "-A", "trust", "--no-sync")
    pg(
        bin_dir / "pg_ctl",
        "-D",
        home / "data",
        "-l",
        home / "log",
        "-w",
        "-t",
        "60",
        "-o",
        f"-h 127.0.0.1 -p {port} -k {home / 'sock'} -c fsync=off -c max_connections=50",
        "start",
    )

    def database(name: str) -> str:
        pg(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

    try:
        yield database
    finally:
        subprocess.run(
            as_user
            + [str(bin_dir / "pg_ctl"), "-D", str(home / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )


def one_round(
    folder: Path, index: int, args: argparse.Namespace, database: Callable[[str], str]
) -> list[str]:
    """The steps of one round; one line per failed step."""
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    steps = {
        "sqlite": lambda: sqlite_workers(folder / "sqlite", data),
        "kill": lambda: kill_and_resume(folder / "kill", data),
    }
    if not args.no_postgres:
        steps["postgres"] = lambda: postgres_workers(
            folder, data, database(f"round{index}"), f"stress{index}"
        )
    bad = []
    for name, step in steps.items():
        try:
            step()
        except RoundFailed as exc:
            bad.append(f"{name}: {exc}")
        except Exception:
            bad.append(f"{name}: {traceback.format_exc(limit=3)}")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds to run (default: 20)")
    parser.add_argument(
        "--load",
        action="store_true",
        help="run beside a CPU and a disk load made here (default: no load)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the Fashion-MNIST folder (default: fashionlab's search order)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL step")
    args = parser.parse_args()
    failures: dict[str, int] = {"sqlite": 0, "postgres": 0, "kill": 0}
    failed_rounds = 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fashionlab-stress-") as tmp:
        root = Path(tmp)
        if os.geteuid() == 0:
            os.chmod(root, 0o755)  # the postgres user must reach its folder
        server = nullcontext() if args.no_postgres else postgres(root)
        with server as database, load(args.load, root):
            for index in range(args.rounds):
                folder = root / f"round{index}"
                bad = one_round(folder, index, args, database)
                for line in bad:
                    failures[line.split(":")[0]] += 1
                failed_rounds += bool(bad)
                verdict = "FAILED " + "; ".join(bad) if bad else "ok"
                print(
                    f"round {index + 1}/{args.rounds}: {verdict}  "
                    f"({time.monotonic() - start:.0f} s)",
                    flush=True,
                )
                shutil.rmtree(folder, ignore_errors=True)
    steps_line = ", ".join(f"{name} {count}" for name, count in failures.items())
    print(
        f"{failed_rounds} of {args.rounds} rounds failed{' under load' if args.load else ''} "
        f"(failed steps: {steps_line}) in {time.monotonic() - start:.0f} s"
    )
    return 1 if failed_rounds else 0


if __name__ == "__main__":
    sys.exit(main())
