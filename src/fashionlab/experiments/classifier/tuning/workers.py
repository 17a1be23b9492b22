"""The workers of a study: the trial loop in this process or in spawned local processes, and
the liveness of trials (which RUNNING trials belong to dead processes).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .... import _interrupts, _processes
from ...._interrupts import check as check_interrupt
from ...._log_setup import configure_logging
from ....data import load_train_val
from ....errors import FashionLabError
from ....threads import pin_threads
from ..config import TuneConfig
from .objective import Objective, pruner, sampler
from .storage import count, database_errors, open_storage, stale_after_s

__all__ = ["TrialReaper", "fail_and_retry", "run_worker", "spawn_workers"]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- liveness of trials

HOST = socket.gethostname()
#
# Known problems of Optuna's heartbeat with several workers on one RDB storage (optuna/optuna
# #4234, #5470, #3293): a live trial whose heartbeat is late (a busy disk, a starved thread, a
# short interval) is failed by another worker, and the worker that owns it then crashes on
# `tell` ("Cannot tell a FAIL trial" / UpdateFinishedTrialError); a RUNNING trial that never
# beat is never judged; and heartbeats are run only by `Study.optimize`, not by ask-and-tell.
# What this module does instead:
#
# * each worker drives its trials with ask-and-tell, records the first heartbeat and its owner
#   ("host:pid", user attr "worker") synchronously right after `ask()`, before anything slow,
#   then beats from its own daemon thread, which is stopped however the trial ends;
# * a RUNNING trial owned by a process on this host is judged by asking the OS whether that
#   process (same pid, boot and start time) lives: a dead one (SIGKILL, OOM) is failed at once,
#   a live one never, however late its heartbeat. Only trials of other hosts are judged by
#   heartbeat, with a grace of a minute beyond twice the interval, and trials that never named
#   an owner by how long *this* process has seen them so (its own monotonic clock: no clocks
#   of two machines are compared);
# * a failed trial goes through the storage's stale-trial callback: its setting is retried once;
# * should a live trial still be failed by another worker (a host that looks dead but is not),
#   its owner logs one warning, drops the result and goes on (see _finish_trial).


def _owner(trial) -> tuple[str, int] | None:
    """The (host, pid) that runs ``trial``, from its ``worker`` user attr."""
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None


def process_token(pid: int) -> str | None:
    """``boot id:pid namespace:start time`` of process ``pid``: who it is, not just its number.

    None where /proc does not tell (not Linux) or the process is gone.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot}:{namespace}:{started}"


def _owner_gone(trial) -> bool | None:
    """Whether the process that runs ``trial`` has ended; None when this host cannot tell.

    A pid alone could be reused by another process (after a reboot, say) and keep a dead
    trial alive for ever, so the pid's boot, namespace and start time must match too.
    """
    owner = _owner(trial)
    if owner is None or owner[0] != HOST:
        return None
    token, mine = trial.user_attrs.get("worker_process"), process_token(os.getpid())
    if token is None or mine is None:
        return not process_alive(owner[1])
    boot, namespace, _ = str(token).split(":", 2)
    my_boot, my_namespace, _ = mine.split(":", 2)
    if boot != my_boot:
        return True  # the machine has restarted since
    if namespace != my_namespace:
        return None  # another container with this host name: only the heartbeat tells
    return not (process_alive(owner[1]) and process_token(owner[1]) == token)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust kill()
    return state not in ("Z", "X")


class TrialReaper:
    """Fails the RUNNING trials of dead processes and hands them to the retry callback.

    ``clock`` (monotonic seconds) times how long a trial without an owner has been seen.
    """

    def __init__(
        self, study, heartbeat_s: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.study, self.grace_s, self.clock = study, stale_after_s(heartbeat_s), clock
        self._unowned_since: dict[int, float] = {}

    def __call__(self) -> list[int]:
        """Fail what is dead now; returns the numbers of the failed trials."""
        from optuna.trial import TrialState

        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            self._unowned_since.clear()
            return []
        storage = self.study._storage
        stale_ids = getattr(storage, "_get_stale_trial_ids", None)  # heartbeat older than grace
        stale = set(stale_ids(self.study._study_id)) if stale_ids is not None else set()
        now = self.clock()
        dead = []
        for trial in running:
            local = _owner_gone(trial)
            if local is not None:
                gone = local
            elif _owner(trial) is not None:
                gone = trial._trial_id in stale
            else:  # killed between ask() and naming itself (or run by other code): wait and see
                first = self._unowned_since.setdefault(trial._trial_id, now)
                gone = trial._trial_id in stale or now - first > self.grace_s
            if gone:
                dead.append(trial)
        seen = {trial._trial_id for trial in running}
        self._unowned_since = {k: v for k, v in self._unowned_since.items() if k in seen}
        return [trial.number for trial in dead if fail_and_retry(self.study, trial._trial_id)]


def fail_and_retry(study, trial_id: int, why: str = "its process {worker} is gone") -> bool:
    """Mark a RUNNING trial FAIL and queue its setting again (once); False if it had finished."""
    import copy

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:  # finished meanwhile, or another worker failed it first
        return False
    trial = copy.deepcopy(storage.get_trial(trial_id))
    worker = trial.user_attrs.get("worker", "(never named)")
    logger.warning(
        "trial %d: %s; marked FAIL, its setting will be retried",
        trial.number,
        why.format(worker=worker),
    )
    getter = (
        getattr(storage, "get_heartbeat_stale_trial_callback", None)  # Optuna >= 4.9
        or getattr(storage, "get_failed_trial_callback", None)
    )
    callback = getter() if getter is not None else None
    if callback is not None:
        callback(study, trial)
    return True


class _Heartbeat:
    """Beats for a trial, or for every id left in a set of trial ids (a bracket: the caller
    removes a trial once it is told), from a daemon thread until the ``with`` block ends,
    however it ends."""

    def __init__(self, storage, trial_ids: int | set[int], interval_s: int) -> None:
        self.storage, self.interval_s = storage, interval_s
        self.trial_ids = {trial_ids} if isinstance(trial_ids, int) else trial_ids
        self._stop = threading.Event()
        # A daemon thread: a beat stuck on a locked database never keeps the process alive.
        self._thread = threading.Thread(
            target=self._beat, daemon=True, name=f"heartbeat-{min(self.trial_ids, default=0)}"
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a busy database: the next beat may pass
                    logger.debug("heartbeat of trial id %d failed: %s", trial_id, exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


# --------------------------------------------------------------------------- the worker loop


def run_worker(
    storage_url: str,
    config: TuneConfig,
    progress: bool,
    data_dir=None,
    splits=None,
    storage=None,
    clock: Callable[[], float] = time.monotonic,
    on_trial_start: Callable[[Any], None] | None = None,
    trunk_dir: Path | None = None,
    run: str | None = None,
) -> int:
    """One worker: load the data, then run trials until the study has ``n_trials`` finished.

    ``on_trial_start(trial)`` is called once a trial has named its owner and beaten, before it
    trains (a seam for tests and monitoring). ``trunk_dir``: where trials keep their trunks
    between rungs (None: nowhere, a retried trial starts from scratch). ``run``: the name of the
    run this worker works for, recorded as each trial's ``run`` user attribute (None: not)."""
    import optuna
    from tqdm.auto import tqdm

    pin_threads(config.threads)  # this process is the worker: its setting, for good
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage or open_storage(storage_url, config.heartbeat_s)
    study = optuna.load_study(
        storage=storage, study_name=config.name, sampler=sampler(config), pruner=pruner(config)
    )
    train, val = (
        splits
        if splits is not None
        else load_train_val(config.val_size, seed=config.seed, data_dir=data_dir)
    )
    if config.max_train is not None:
        train = train.subset(config.max_train, seed=config.seed)
    objective = Objective(train, val, config, trunk_dir)
    reap = TrialReaper(study, config.heartbeat_s, clock)
    start, ran = clock(), 0
    bar = tqdm(
        total=config.n_trials, initial=count(study)["finished"], disable=not progress, unit="trial"
    )
    with bar, _quiet_epoch_logs():  # on the way out: the log levels back, then the bar closed
        while True:
            check_interrupt()
            reap()
            counts = count(study)
            bar.n = counts["finished"]
            bar.refresh()
            if _should_stop(counts, config, clock, start):
                break
            if counts["finished"] + counts["running"] >= config.n_trials and counts["waiting"] == 0:
                time.sleep(min(1.0, config.heartbeat_s))  # the last trials run elsewhere
                continue
            if config.pruner == "sha":
                size, rungs = next_bracket(config, counts)
                ran += _run_one_bracket(
                    study, objective, size, config.heartbeat_s, on_trial_start, run, rungs
                )
            else:
                ran += _run_one_trial(study, objective, config.heartbeat_s, on_trial_start, run)
    return ran


@contextmanager
def _quiet_epoch_logs() -> Iterator[None]:
    """One line per trial instead of one per epoch of every trial; -v keeps the epoch lines."""
    quiet = [logging.getLogger(f"fashionlab.{name}") for name in ("train", "population")]
    levels = [each.level for each in quiet]
    for each in quiet:
        if each.getEffectiveLevel() == logging.INFO:
            each.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for each, level in zip(quiet, levels, strict=True):
            each.setLevel(level)


def _should_stop(
    counts: dict[str, int], config: TuneConfig, clock: Callable[[], float], start: float
) -> bool:
    """The study has its trials, or this worker's ``timeout_s`` has passed (logged)."""
    if counts["finished"] >= config.n_trials:
        return True
    if config.timeout_s is not None and clock() - start > config.timeout_s:
        logger.warning(
            "tuning timeout of %gs reached with %d of %d trials finished",
            config.timeout_s,
            counts["finished"],
            config.n_trials,
        )
        return True
    return False


def _run_one_trial(
    study,
    objective,
    heartbeat_s: int,
    on_trial_start: Callable[[Any], None] | None = None,
    run: str | None = None,
) -> int:
    """Ask, beat, evaluate, tell; returns 1 if the result was recorded, 0 if it was dropped."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trial = _ask(study)
    try:
        _claim(trial, run)
        check_interrupt()  # one that came while the trial was created: fail it, below
        with _Heartbeat(study._storage, trial._trial_id, heartbeat_s):
            if on_trial_start is not None:
                on_trial_start(trial)
            try:
                state, value = TrialState.COMPLETE, objective(trial)
            except optuna.TrialPruned:
                state, value = TrialState.PRUNED, None
    except UpdateFinishedTrialError:  # failed by another worker while it ran (report, attrs)
        _warn_dropped(trial.number)
        return 0
    except Exception:
        _finish_trial(study, trial, TrialState.FAIL, None)  # as study.optimize: FAIL, then raise
        raise
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): fail the trial now and queue its setting again, so a
        # resume reruns it instead of waiting for a heartbeat that will not come.
        try:
            fail_and_retry(study, trial._trial_id, why="stopped with the command")
        except Exception as exc:  # the database may be what was interrupted
            logger.debug("could not fail interrupted trial %d: %s", trial.number, exc)
        raise
    return _finish_trial(study, trial, state, value)


def _ask(study):
    """``study.ask()``, not cut by an interrupt: a signal that arrives meanwhile is raised by the
    caller's next ``check_interrupt()``, once it holds the trial and can fail it."""
    with warnings.catch_warnings(), _interrupts.deferred():  # "heartbeat is supposed to be
        warnings.filterwarnings("ignore", message="Heartbeat of storage")  # used with optimize"
        return study.ask()


def _claim(trial, run: str | None) -> None:
    """The first heartbeat and the owner, before anything slow: a trial that names a live owner
    is never failed by a worker of this host (see TrialReaper)."""
    trial.study._storage.record_heartbeat(trial._trial_id)
    token = process_token(os.getpid())
    if token is not None:
        trial.set_user_attr("worker_process", token)
    trial.set_user_attr("worker", f"{HOST}:{os.getpid()}")
    if run is not None:  # a retry carries its first run's attributes: this one is the writer
        trial.set_user_attr("run", run)


def next_bracket(config: TuneConfig, counts: dict[str, int]) -> tuple[int, tuple[int, ...]]:
    """The size and the rungs of the next ``sha`` bracket, from the study's trial counts: in the
    round the study has reached (``config.round_sizes()``), brackets of ``config.bracket`` over
    all the rungs until only the round's direct trials are left to ask, then one bracket of
    those at the top rung alone. Trials queued again (WAITING: a cut bracket's) are asked first,
    whatever the bracket."""
    asked = counts["finished"] + counts["running"]
    top = (config.epochs[-1],)
    for size, direct in config.round_sizes():
        if asked < size:
            left = size - asked
            halving = left - direct
            if halving > 0:
                return min(config.bracket, max(halving, counts["waiting"])), tuple(config.epochs)
            return max(left, counts["waiting"], 1), top
        asked -= size
    return max(counts["waiting"], 1), top


def _run_one_bracket(
    study,
    objective,
    size: int,
    heartbeat_s: int,
    on_trial_start: Callable[[Any], None] | None = None,
    run: str | None = None,
    rungs: tuple[int, ...] | None = None,
) -> int:
    """Ask ``size`` trials, claim them, train them as one :class:`.brackets.Bracket` through
    ``rungs`` (None: the config's), tell each
    as its outcome is known; returns how many results were recorded. Interrupted, the trials
    not yet told are failed and queued again (the next bracket resumes them from their trunks);
    on an error they are failed, and the error raised."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from .brackets import Bracket

    trials: list[Any] = []
    untold: set[int] = set()
    recorded = 0

    def tell(trial, state: str, value: float | None) -> None:
        nonlocal recorded
        untold.discard(trial._trial_id)
        recorded += _finish_trial(study, trial, TrialState[state], value)

    try:
        for _ in range(size):
            trial = _ask(study)
            trials.append(trial)
            untold.add(trial._trial_id)
            _claim(trial, run)
            check_interrupt()
        with _Heartbeat(study._storage, untold, heartbeat_s):
            if on_trial_start is not None:
                for trial in trials:
                    on_trial_start(trial)
            Bracket(trials, objective, tell, rungs).run()
    except UpdateFinishedTrialError:  # one was failed by another worker: retry the rest
        for trial_id in sorted(untold):
            fail_and_retry(study, trial_id, why="its bracket stopped (a trial was taken over)")
        return recorded
    except Exception:
        for trial in trials:  # as study.optimize: FAIL, then raise
            if trial._trial_id in untold:
                _finish_trial(study, trial, TrialState.FAIL, None)
        raise
    except BaseException:
        try:
            for trial_id in sorted(untold):
                fail_and_retry(study, trial_id, why="stopped with the command")
        except Exception as exc:  # the database may be what was interrupted
            logger.debug("could not fail the interrupted bracket's trials: %s", exc)
        raise
    return recorded


def _finish_trial(study, trial, state, value) -> int:
    """Tell ``state``/``value``; a trial another worker failed meanwhile is dropped, not a crash.

    Dropping is safe: whoever failed the trial also queued its setting again (the retry
    callback), so the study loses no setting, and a FAIL trial counts for nothing; keeping the
    result would need rewriting a finished trial, which the storage forbids.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        told = study.tell(trial, value, state=state, skip_if_finished=True)
    except UpdateFinishedTrialError:  # failed between tell's check and its write
        _warn_dropped(trial.number)
        return 0
    if told.state != state:
        _warn_dropped(trial.number)
        return 0
    return 1


def _warn_dropped(number: int) -> None:
    logger.warning(
        "trial %d was marked finished by another worker while it ran (its heartbeat "
        "looked dead); its result is dropped and its setting retried",
        number,
    )


# --------------------------------------------------------------------------- local worker processes


def spawn_workers(
    storage_url: str,
    config: TuneConfig,
    data_dir,
    splits,
    study,
    trunk_dir: Path | None = None,
    run: str | None = None,
) -> int:
    """``config.workers`` spawned processes on the study, supervised by this one.

    A worker that dies (killed, out of memory) does not stop the others: its trial is failed
    at once and retried by one of them. If every worker dies before the study has
    ``n_trials`` finished, or one raises an error, that is an error here.
    """
    level = logging.getLogger("fashionlab").getEffectiveLevel()
    children = [
        _processes.start(
            _child_worker,
            (level, storage_url, config, index, data_dir, splits, trunk_dir, run),
            name=f"tuning worker {index}",
            daemon=True,
        )
        for index in range(config.workers)
    ]
    running, errors, died, ran = list(children), [], [], 0
    reap = TrialReaper(study, config.heartbeat_s)
    try:
        while running:
            for child, outcome in _processes.wait_any(running):
                running.remove(child)
                if isinstance(outcome.error, KeyboardInterrupt):  # a worker sent SIGTERM alone
                    signum = _interrupts.signal_number(outcome.error)
                    died_of = _processes.ChildDied(child.name, child.process.pid, -signum)
                    outcome = _processes.Outcome(None, died_of)
                if isinstance(outcome.error, _processes.ChildDied):
                    died.append(outcome.error)
                    logger.warning(
                        "%s; %s",
                        outcome.error,
                        "the other workers go on" if running else "no worker is left",
                    )
                    reap()  # its trial: FAIL now, retried by a worker that lives
                elif outcome.error is not None:
                    errors.append(outcome.error)
                else:
                    ran += outcome.value
    finally:
        _processes.stop(children)
    if errors:
        if isinstance(errors[0], FashionLabError):
            raise errors[0]
        raise FashionLabError(
            f"a tuning worker failed: {type(errors[0]).__name__}: {errors[0]}"
        ) from errors[0]
    finished = count(study)["finished"]
    if len(died) == len(children) and finished < config.n_trials:
        raise FashionLabError(
            f"all {len(children)} tuning workers died ({died[-1]}) with "
            f"{finished} of {config.n_trials} trials finished; run the same "
            f"command again to resume"
        )
    return ran


def _child_worker(
    level: int,
    storage_url: str,
    config: TuneConfig,
    index: int,
    data_dir,
    splits,
    trunk_dir,
    run: str | None = None,
) -> int:
    """Entry point of a spawned worker process: its log lines go to stderr like the parent's."""
    configure_logging(level, f"[worker {index}] %(message)s")
    # SIGTERM from the parent (it stops its workers however it ends) raises here instead of
    # killing the process outright, so the trials this worker holds are failed and retried.
    with (
        _interrupts.handling(),
        database_errors(storage_url),
    ):  # the parent gets a picklable one-line error, not the chain
        return run_worker(
            storage_url, config, False, data_dir, splits, trunk_dir=trunk_dir, run=run
        )
