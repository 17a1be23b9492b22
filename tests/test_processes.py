"""Worker and stage processes: they die with their parent, interrupts end cleanly and resume,
a dead worker does not stop the study, and no worker crashes on a trial another one failed.

Every test that signals a process first waits for a state of the study database, and stops
the process group (SIGSTOP) while it checks that state, so no assertion depends on which
process got there first or how long something took.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from fashionlab.experiments.classifier import TuneConfig, hyperparam_tuning
from process_tools import (
    alive,
    children,
    finished,
    freeze_when,
    query,
    retried,
    running_owners,
    started,
    trial_states,
    wait_for,
)
from tune_cases import TINY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def splits(tiny_train_val):
    train, val = tiny_train_val
    return train.subset(600, seed=2), val.subset(300, seed=2)


def _tune(out: Path, data_dir: Path, trials: int, workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fashionlab",
        "tune",
        "--out",
        str(out),
        "--data-dir",
        str(data_dir),
        "--max-train",
        "300",
        "--epochs",
        "1,2",
        "--pruner",
        "asha",  # one trial at a time: a signal cuts one trial (brackets: test_brackets.py)
        "--heartbeat",
        "1",
        "--trials",
        str(trials),
        "--workers",
        str(workers),
        "--no-retrain",
        "--no-progress",
        "--device",
        "cpu",
    ]


def _run(out: Path, data_dir: Path, config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fashionlab",
        "run",
        "--quick",
        "--out",
        str(out),
        "--config",
        str(config),
        "--data-dir",
        str(data_dir),
        "--no-progress",
        "--jobs",
        "2",
        "--only",
        "heinit",
        "--only",
        "tune",
    ]


def _study_toml(path: Path, trials: int) -> Path:
    path.write_text(
        f'[tune]\nn_trials = {trials}\nmax_train = 300\nepochs = [1]\npruner = "asha"\n'
        "heartbeat_s = 1\n[heinit]\nsamples = 30000\nbatches = 30\ndepth = 10\n"
    )
    return path


def _owned_running(db: Path, owners: int = 1):
    """Ready when ``owners`` processes each run a trial that names them (and none is unnamed)."""

    def ready():
        running = running_owners(db)
        pids = set(running.values())
        return running if None not in pids and len(pids) >= owners else None

    return ready


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


# --------------------------------------------------------------------------- parent death


@pytest.mark.parametrize("what", ["tune --workers 2", "run --jobs 2"])
def test_children_die_with_their_parent(what: str, tmp_path: Path, real_data_dir: Path) -> None:
    if what.startswith("tune"):
        command = _tune(tmp_path, real_data_dir, 1000, workers=2)
        db = tmp_path / "tune" / "study.db"
    else:
        command = _run(tmp_path / "run", real_data_dir, _study_toml(tmp_path / "s.toml", 1000))
        db = tmp_path / "run" / "tune" / "study.db"
    with started(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        freeze_when(process.pid, _owned_running(db), process)
        descendants = _descendants(process.pid)
        owners = set(running_owners(db).values())
        assert owners and owners <= set(descendants)  # the trials run in child processes
        os.kill(process.pid, signal.SIGKILL)  # like the OOM killer: no cleanup code runs
        os.killpg(process.pid, signal.SIGCONT)
        process.wait()
        wait_for(lambda: not any(alive(pid) for pid in descendants), "end of every child")


# --------------------------------------------------------------------------- interrupts


@pytest.mark.parametrize(
    "what, signum",
    [
        ("tune", signal.SIGINT),
        ("tune --workers 2", signal.SIGTERM),
        ("run --jobs 2", signal.SIGINT),
    ],
)
def test_an_interrupt_ends_in_one_line_and_a_folder_that_resumes(
    what: str, signum: int, tmp_path: Path, real_data_dir: Path
) -> None:
    if what.startswith("tune"):
        workers = 2 if "workers" in what else 1
        command = _tune(tmp_path, real_data_dir, 1000, workers)
        db = tmp_path / "tune" / "study.db"
    else:
        toml = _study_toml(tmp_path / "s.toml", 1000)
        command = _run(tmp_path / "run", real_data_dir, toml)
        db = tmp_path / "run" / "tune" / "study.db"
    with started(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        cut = freeze_when(process.pid, _owned_running(db), process)
        descendants = _descendants(process.pid)
        if signum == signal.SIGINT:  # Ctrl-C: the terminal signals the whole group
            os.killpg(process.pid, signum)
        else:  # `kill PID`: the main process only
            os.kill(process.pid, signum)
        os.killpg(process.pid, signal.SIGCONT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 128 + signum, stderr
        lines = stderr.splitlines()
        assert lines.count("interrupted") == 1 and lines[-1] == "interrupted", stderr
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
        wait_for(lambda: not any(alive(pid) for pid in descendants), "end of every child")
    done = finished(db)
    if what.startswith("run"):
        _study_toml(toml, done + 1)
        command = _run(tmp_path / "run", real_data_dir, toml)
    else:
        command = _tune(tmp_path, real_data_dir, done + 1, workers)
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    states = trial_states(db)
    assert "RUNNING" not in states.values()
    for number in cut:  # cut short: FAIL, and its setting queued again once
        if what != "tune" and states[number] in ("COMPLETE", "PRUNED"):
            # A child process runs on after SIGCONT until the parent's SIGTERM reaches it, so
            # a trial near a rung may end first (complete, or pruned at that rung); never
            # RUNNING, never retried twice.
            assert retried(db, number) == 0
            continue
        assert states[number] == "FAIL" and retried(db, number) == 1
    assert finished(db) >= done + 1  # with two workers, each may finish a retried trial


# --------------------------------------------------------------------------- dead workers


def test_a_dead_local_worker_does_not_stop_the_study(tmp_path: Path, real_data_dir: Path) -> None:
    db = tmp_path / "tune" / "study.db"
    with started(
        _tune(tmp_path, real_data_dir, 6, workers=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        running = freeze_when(process.pid, _owned_running(db), process)
        number, victim = next(iter(running.items()))
        os.kill(victim, signal.SIGKILL)  # the OOM killer picks one worker
        os.killpg(process.pid, signal.SIGCONT)
        stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenProcessPool" not in stderr, stderr
    assert f"(pid {victim}) died: killed by SIGKILL" in stderr
    states = trial_states(db)
    assert states[number] == "FAIL" and retried(db, number) == 1
    assert finished(db) >= 6 and "RUNNING" not in states.values()


def test_when_every_local_worker_dies_the_command_says_so(
    tmp_path: Path, real_data_dir: Path
) -> None:
    db = tmp_path / "tune" / "study.db"
    with started(
        _tune(tmp_path, real_data_dir, 1000, workers=2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        freeze_when(process.pid, _owned_running(db), process)
        workers = children(process.pid)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        os.killpg(process.pid, signal.SIGCONT)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: all 2 tuning workers died") and "resume" in last, stderr
    assert "Traceback" not in stderr, stderr


# --------------------------------------------------------------------------- trials others failed


def test_a_worker_goes_on_when_another_failed_its_trial(tmp_path: Path, splits, caplog) -> None:
    # Another worker that took this one for dead (a late heartbeat) fails its trial while it runs,
    # before it reports its first epoch: the owner drops the result and goes on.
    from fashionlab.experiments.classifier import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", 1)
    failed: list[int] = []

    def fail_it(trial: optuna.trial.Trial) -> None:
        if len(failed) < 2:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            failed.append(trial.number)

    with caplog.at_level(logging.WARNING, logger="fashionlab"):
        result = hyperparam_tuning(
            tmp_path, TuneConfig(n_trials=2, **TINY), splits=splits, on_trial_start=fail_it
        )
    trials = optuna.load_study(study_name="fashionlab-plain", storage=storage).get_trials()
    assert failed == [0, 1] and [t.state.name for t in trials[:2]] == ["FAIL", "FAIL"]
    assert result.counts["finished"] == 2 and result.trials_run == 2
    dropped = [r for r in caplog.records if "marked finished by another worker" in r.message]
    assert [r.message.split()[1] for r in dropped] == ["0", "1"]


def test_in_sqlite_a_trial_is_read_and_changed_in_one_step(tmp_path: Path) -> None:
    # Optuna fails a trial (or takes a WAITING one) by reading its state and then writing it,
    # with SELECT ... FOR UPDATE, which SQLite ignores: two reapers both read RUNNING and both
    # failed it (two retries of one setting). Our transactions begin IMMEDIATE: from its first
    # read a transaction holds the write lock, and another process cannot write in between.
    from fashionlab.experiments.classifier import open_storage

    db = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{db}", 1)
    optuna.create_study(storage=storage, study_name="one")
    with storage.engine.connect() as connection:
        connection.exec_driver_sql("SELECT study_name FROM studies").all()  # has only read
        other = sqlite3.connect(db, timeout=0)  # another process's writer, without waiting
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("UPDATE studies SET study_name = study_name")
        finally:
            other.close()
        connection.commit()
    other = sqlite3.connect(db, timeout=0)  # the lock ends with the transaction
    other.execute("UPDATE studies SET study_name = study_name")
    other.commit()
    other.close()


class _JumpingClock:
    """A monotonic clock that moves an hour at every reading: every grace period has passed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 3600.0
        return self.now


def test_a_live_owner_is_never_taken_for_dead_and_a_dead_one_is_retried_at_once(
    tmp_path: Path, splits
) -> None:
    from fashionlab.experiments.classifier import open_storage
    from fashionlab.experiments.classifier.tuning.workers import process_token

    db = tmp_path / "study.db"
    hyperparam_tuning(tmp_path, TuneConfig(n_trials=1, **TINY), splits=splits)
    storage = open_storage(f"sqlite:///{db}", 1)
    study = optuna.load_study(study_name="fashionlab-plain", storage=storage)
    host = socket.gethostname()
    live = subprocess.Popen(["sleep", "600"])  # a process of this host that runs a trial ...
    gone = subprocess.Popen(["true"])  # ... and one that died running a trial
    gone.wait()
    try:
        with pytest.warns(UserWarning, match="Heartbeat"):  # ask() outside optimize()
            trials = {name: study.ask() for name in ("live", "gone", "orphan", "reused")}
        for name, process in (("live", live), ("gone", gone), ("reused", live)):
            storage.record_heartbeat(trials[name]._trial_id)
            trials[name].set_user_attr("worker", f"{host}:{process.pid}")
        # "reused": its pid now belongs to another process (started at another time).
        boot_and_namespace = process_token(os.getpid()).rsplit(":", 1)[0]
        trials["reused"].set_user_attr("worker_process", f"{boot_and_namespace}:1")
        # The live trial's heartbeat is late (its process is starved, say): older than twice
        # the interval, by the database's clock.
        late = (
            "SELECT (julianday('now') - julianday(heartbeat)) * 86400 FROM trial_heartbeats "
            "WHERE trial_id = ?"
        )
        wait_for(lambda: query(db, late, trials["live"]._trial_id)[0][0] > 3, "a late heartbeat")
        result = hyperparam_tuning(
            tmp_path, TuneConfig(n_trials=4, **TINY), splits=splits, clock=_JumpingClock()
        )
        states = trial_states(db)
        assert states[trials["live"].number] == "RUNNING"
        for name in ("gone", "orphan", "reused"):  # failed without waiting for a grace period
            assert states[trials[name].number] == "FAIL"
            assert retried(db, trials[name].number) == 1
        assert result.counts["finished"] == 4
    finally:
        live.kill()
        live.wait()
