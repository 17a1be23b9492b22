"""The engine of ``fashionlab run``: a stage table run in order into one run directory, cached,
resumable and locked. It knows no experiment: the table (``stages.py``) is an argument.

Each stage writes into ``<run>/<stage>/`` and finishes by writing ``<run>/<stage>/stage.json``
(atomically, last). Its keys:

- ``stage``, ``config`` (the stage's resolved config), ``device``, ``config_hash`` (of the
  config, the seed, the device and the hashes of the stages it depends on), ``settings_hash``
  (of its own settings alone: the config without ``Stage.in_place`` keys, the seed, the device);
- ``summary`` (small results; ``headline`` is the line of the final table), ``seconds``,
  ``finished_at``;
- ``outputs``: ``{path relative to the run folder: {"size": bytes, "sha256": hex}}`` for every
  file under ``<run>/<stage>/`` and every file of ``Stage.outputs`` (the report stage:
  ``report.pdf`` in the run root). Not outputs: ``stage.json``, hidden files (temporary
  files, the lock, the folder's mark) and SQLite files (the tuning study is working state whose
  bytes change when it is opened; its results are the exported ``trials.csv``, ``trials.json``
  and ``best.json``).

**No secret is saved or hashed.** A stage's config is recorded (run.json, stage.json) and hashed
with its passwords hidden (:func:`fashionlab.redaction.redact_tree`: a storage URL's
``user:***@`` and ``?password=***``); the stage itself runs with the config as given, and
run.json's ``command`` is the command line with the same passwords hidden. The password is
left out of the hash entirely, not replaced by a digest of it: it chooses no result (the
host, port, database and study name do, and they stay in the hash, so another host is another
cache), a rotated password is exactly the case where the cache must stay valid, and no digest of
a short password is written where it could be guessed offline.

A stage is **cached** when its ``stage.json`` has the same hash and every recorded output has
its size and sha256 (sizes are compared first; files are hashed only when they all match). A
missing or changed output, or a stage it depends on that runs again, makes it run again in
place, with one line saying why; its ``stage.json`` is removed first, so it is never reported
as done before it has finished again. A ``stage.json`` without ``outputs`` (an older version)
is not trusted. An SQLite file in a stage folder that is not a usable database (cut short) cannot
be resumed: the folder is moved aside as for ``force`` and the stage starts afresh, with one line
saying why.

**Changed settings are refused, before anything is written.** A run folder holds one set of
settings: when a stage folder exists whose own settings differ from this run's (those in its
``stage.json``, or, for a stage that started but did not finish, ``run.json``'s
``stage_settings``), nothing is moved or written and the error names each such stage, what
changed, and the flag that redoes them: ``--force STAGE`` for each first changed stage (it
covers everything downstream), or ``--force all`` when that is every stage (a new seed). Two
kinds of change are carried out in place instead: a ``Stage.in_place`` setting (the tuning
budget: more trials resume the same study) and a stage upstream that ran again; the stage
then runs again in its folder, and so does everything downstream of it.

``force=("tune",)`` moves ``<run>/tune`` (and the stage's files outside its folder) to
``<run>/tune.previous`` and re-runs it and everything downstream. Nothing is deleted: an older
``tune.previous`` is renamed to the first free ``tune.previous.N`` (N = 2, 3, ...). A killed
run resumes from the last finished stage, and the tuning study (SQLite in ``<run>/tune``)
resumes trial by trial.

A folder that holds files fashionlab did not write (no mark and no ``run.json`` of ours; see
:func:`fashionlab.locks.lock_folder`) is refused before anything is written, unless every stage
is forced (``--force all``): then ``run.json`` and every stage folder and output already there
are moved aside to ``NAME.previous`` first. Files the run does not write are left alone.

One process writes a run folder at a time: :func:`run_study` holds the folder's lock
(:func:`fashionlab.locks.lock_folder`) from the first check to the last write; a second run
into the folder fails naming the holder, or waits (``wait=True``, ``--wait``).

Independent stages can run at once (``jobs=2``: the plain and the variant tuning chains side by
side, the autoencoder in a gap), each in its own spawned process. Every stage runs on one CPU
thread in either mode, so ``jobs`` changes the wall time, not the numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, read_json
from ..errors import ConfigError, StorageError, describe_os_error
from ..locks import lock_folder, move_aside
from ..redaction import redact_command, redact_tree
from ..runtime import resolve_device
from .provenance import calibration, data_checksums, git_commit, versions
from .run_folder import (
    STAGE_FILE,
    broken_database,
    check_outputs,
    describe_change,
    record_outputs,
)
from .table import Stage, StageContext, StageOutcome, StudyConfig, downstream
from .workers import default_jobs, run_stage, schedule

__all__ = ["run_stages"]

logger = logging.getLogger(__name__)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_stages(
    run_dir: str | Path,
    study: StudyConfig,
    stages: Sequence[Stage],
    *,
    force: Sequence[str] = (),
    only: Sequence[str] | None = None,
    progress: bool = True,
    jobs: int | None = None,
    echo: Callable[[str], None] = print,
    wait: bool = False,
) -> list[StageOutcome]:
    """Run (or reuse) every stage of ``stages`` into ``run_dir``, in order.

    Args:
        run_dir: the run directory (created if needed).
        study: seed, device, quick mode and per-stage overrides.
        stages: the stage table, in order (dependencies first).
        force: stage names to redo, with everything downstream of them (``"all"``: every stage);
            their folders are moved aside to ``<stage>.previous`` first.
        only: if given, run only these stages (and the cached results of their dependencies).
        progress: tqdm bars inside stages (only with ``jobs=1``; parallel stages log a line per
            epoch).
        jobs: how many independent stages run at once, each in its own process (None:
            :func:`~fashionlab.pipeline.workers.default_jobs`). Every stage runs on one CPU thread
            whatever ``jobs`` is, so the results do not depend on it.
        echo: where the per-stage lines and the final table go.
        wait: if another process holds the run folder's lock, wait for it instead of failing.

    Returns:
        One :class:`StageOutcome` per stage, in order.

    Raises:
        ConfigError: unknown stage names, a dependency of ``only`` has not been run, or the folder
            holds stages made with other settings (the message names the ``--force`` that
            redoes them).
        FolderNotOursError: the folder holds files fashionlab did not write and not every
            stage is forced.
        FolderInUseError: another process holds the folder's lock (and ``wait`` is false).
        StorageError: a file or database cannot be written or read (disk full, read-only, ...).
    """
    names = [stage.name for stage in stages]
    for name in [*(n for n in force if n != "all"), *(only or [])]:
        if name not in names:
            raise ConfigError(f"unknown stage {name!r}; stages are {names} (or all, for --force)")
    force = names if "all" in force else list(force)
    jobs = default_jobs() if jobs is None else jobs
    run_dir = Path(run_dir)
    # A folder that holds files fashionlab did not write is used only when every stage is
    # redone; what the run writes there is kept as NAME.previous first.
    writes = ["run.json", *(p for stage in stages for p in (stage.name, *stage.outputs))]
    every = set(force) >= set(names)
    with lock_folder(run_dir, wait=wait, force=every, replaces=writes, force_flag="--force all"):
        return _run_locked(run_dir, study, tuple(stages), force, only, progress, jobs, echo)


def _run_locked(
    run_dir: Path,
    study: StudyConfig,
    stages: tuple[Stage, ...],
    force: Sequence[str],
    only: Sequence[str] | None,
    progress: bool,
    jobs: int,
    echo: Callable[[str], None],
) -> list[StageOutcome]:
    """:func:`run_stages` once the folder's lock is held."""
    device = str(resolve_device(study.device))
    # Settings hold the device itself: "auto" and "cpu" on a machine without CUDA are one setting.
    study = dataclasses.replace(study, device=device)
    # ``resolved`` runs the stages; ``shown`` (its secrets hidden) is hashed, compared and saved.
    resolved = {stage.name: stage.resolve(study) for stage in stages}
    shown = {name: redact_tree(config) for name, config in resolved.items()}
    hashes: dict[str, str] = {}
    settings: dict[str, str] = {}  # what a folder may not mix: a stage's own settings
    for stage in stages:
        upstream = [hashes[d] for d in stage.depends]
        hashes[stage.name] = _hash(
            {
                "config": shown[stage.name],
                "seed": study.seed,
                "device": device,
                "upstream": upstream,
            }
        )
        own = {k: v for k, v in shown[stage.name].items() if k not in stage.in_place}
        settings[stage.name] = _hash({"config": own, "seed": study.seed, "device": device})
    run_json = run_dir / "run.json"
    record: dict[str, Any] = _read_record(run_json) or {}
    markers = {stage.name: _read_record(run_dir / stage.name / STAGE_FILE) for stage in stages}

    # Nothing is written before this check: a folder never mixes settings.
    redo = downstream(stages, force)
    _refuse_changed_settings(run_dir, stages, shown, settings, device, record, markers, redo)
    for stage in stages:
        if stage.name in redo and any((run_dir / p).exists() for p in (stage.name, *stage.outputs)):
            previous = move_aside(run_dir, stage.name, stage.outputs)
            markers[stage.name] = None
            echo(f"[{stage.name}] forced: previous outputs moved to {previous}")
    for stage in stages:  # a database cut short cannot be resumed: the stage starts afresh
        broken = broken_database(run_dir / stage.name)
        if broken is not None:
            previous = move_aside(run_dir, stage.name, stage.outputs)
            markers[stage.name] = None
            echo(f"[{stage.name}] {broken}: its folder moved to {previous}, running it again")

    summaries: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, StageOutcome] = {}
    todo: list[Stage] = []
    again: set[str] = set()  # stages with a finished record that run again
    for stage in stages:
        done = markers[stage.name]
        if done is not None:
            if done.get("config_hash") == hashes[stage.name]:
                reason = _why_not_cached(run_dir, stage, done, again | {t.name for t in todo})
            else:  # its own settings are the same (checked above): an in-place change or an input
                reason = _why_changed(
                    stage, done, shown[stage.name], again | {t.name for t in todo}
                )
            if reason is None:
                summaries[stage.name] = done["summary"]
                outcomes[stage.name] = StageOutcome(
                    stage.name, "cached", done["seconds"], done["summary"]
                )
                echo(f"[{stage.name}] cached ({done['seconds']:.1f} s when it ran)")
                continue
            echo(f"[{stage.name}] {reason}: running it again")
            again.add(stage.name)
        if only is None or stage.name in only:
            todo.append(stage)
    for stage in todo:  # every dependency must be cached or run now
        for dep in stage.depends:
            if dep not in summaries and dep not in {t.name for t in todo}:
                raise ConfigError(
                    f"stage {dep!r} is needed before {stage.name!r}; run without --only, "
                    f"or add --only {dep}"
                )
    for name in again:  # a stage that runs again is not done until it has finished again
        (run_dir / name / STAGE_FILE).unlink(missing_ok=True)

    record.update(
        {
            "seed": study.seed,
            "device": device,
            "quick": study.quick,
            "config": shown,
            "stage_hashes": hashes,
            "stage_settings": settings,
            "versions": versions(),
            "git": git_commit(),
            "data": data_checksums(study.data_dir),
            "command": redact_command(sys.argv),
            "calibration": calibration() if todo else record.get("calibration"),
            "stage_seconds": record.get("stage_seconds", {}),
        }
    )
    atomic_write_json(run_json, record)

    def finish(stage: Stage, summary: dict[str, Any], seconds: float) -> None:
        atomic_write_json(
            run_dir / stage.name / STAGE_FILE,
            {
                "stage": stage.name,
                "config_hash": hashes[stage.name],
                "settings_hash": settings[stage.name],
                "config": shown[stage.name],
                "device": device,
                "summary": summary,
                "seconds": seconds,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "outputs": record_outputs(run_dir, run_dir / stage.name, stage.outputs),
            },
        )
        record["stage_seconds"][stage.name] = seconds
        atomic_write_json(run_json, record)
        summaries[stage.name] = summary
        outcomes[stage.name] = StageOutcome(stage.name, "ran", seconds, summary)
        echo(f"[{stage.name}] done in {seconds:.1f} s — {summary.get('headline', '')}")

    def context(stage: Stage) -> StageContext:
        return StageContext(
            run_dir, study, device, progress and jobs == 1, {d: summaries[d] for d in stage.depends}
        )

    if jobs <= 1 or len(todo) <= 1:
        for stage in todo:
            echo(f"[{stage.name}] {stage.title or stage.name} ...")
            finish(
                stage,
                *run_stage(stage, run_dir / stage.name, resolved[stage.name], context(stage)),
            )
    else:
        schedule(
            todo,
            jobs,
            summaries,
            lambda st: (st, run_dir / st.name, resolved[st.name], context(st)),
            finish,
            echo,
        )
    return [outcomes[stage.name] for stage in stages if stage.name in outcomes]


def _read_record(path: Path) -> dict[str, Any] | None:
    """A JSON record (run.json, stage.json), or None if it is absent or unreadable."""
    try:
        record = read_json(path)
    except FileNotFoundError:
        return None
    except ValueError:  # cut short by a crash of an old version, or edited by hand
        logger.warning("%s is not valid JSON; ignoring it", path)
        return None
    except OSError as exc:
        raise StorageError(path, describe_os_error(exc), "read", exc.errno) from exc
    # An older version saved storage URLs as given: their passwords are not shown or kept.
    return redact_tree(record) if isinstance(record, dict) else None


def _why_not_cached(
    run_dir: Path, stage: Stage, done: dict[str, Any], rerun: set[str]
) -> str | None:
    """Why a stage with a matching record must run again (an input reruns, an output changed)."""
    upstream = [d for d in stage.depends if d in rerun]
    if upstream:
        return f"{', '.join(upstream)} runs again"
    if not isinstance(done.get("outputs"), dict):
        return "stage.json records no output checksums (written by an older version)"
    return check_outputs(run_dir, done["outputs"])


def _why_changed(
    stage: Stage, done: dict[str, Any], config: dict[str, Any], rerun: set[str]
) -> str:
    """Why a stage with the same own settings but another hash runs again, in words."""
    upstream = [d for d in stage.depends if d in rerun]
    if upstream:
        return f"{', '.join(upstream)} runs again"
    changed = describe_change(done.get("config"), config)
    return f"{changed} changed" if changed else "an input changed"


def _refuse_changed_settings(
    run_dir: Path,
    stages: Sequence[Stage],
    resolved: dict[str, dict[str, Any]],
    settings: dict[str, str],
    device: str,
    record: dict[str, Any],
    markers: dict[str, dict[str, Any] | None],
    redo: set[str],
) -> None:
    """Refuse a folder whose stages were made with other settings than these, naming the fix.

    A stage's settings are those in its ``stage.json`` or, if it started but did not finish,
    the ``stage_settings`` of ``run.json``; ``Stage.in_place`` keys and the stages upstream are
    not part of them (a change there runs the stage again in its folder). Stages in ``redo``
    are moved aside, so they do not count.
    """
    changed: dict[str, str] = {}
    for stage in stages:
        if stage.name in redo or not (run_dir / stage.name).exists():
            continue
        done = markers[stage.name]
        if done is not None:
            recorded = done.get("settings_hash")
            old, old_device = done.get("config"), done.get("device")
        else:
            recorded = record.get("stage_settings", {}).get(stage.name)
            old, old_device = record.get("config", {}).get(stage.name), record.get("device")
        if recorded is None and isinstance(old, dict):  # written before settings were hashed
            own = {k: v for k, v in resolved[stage.name].items() if k not in stage.in_place}
            differs = {k: v for k, v in old.items() if k not in stage.in_place} != own
        else:
            differs = recorded is not None and recorded != settings[stage.name]
        if differs:
            why = describe_change(old, resolved[stage.name])
            if old_device not in (None, device):
                why = f"device {old_device!r} (asked: {device!r}); {why}"
            changed[stage.name] = why
    if not changed:
        return
    roots = [
        name
        for name in changed
        if not any(name in downstream(stages, [other]) for other in changed if other != name)
    ]
    redo_all = downstream(stages, roots) >= {stage.name for stage in stages}
    flags = "--force all" if redo_all else " ".join(f"--force {name}" for name in roots)
    listed = "; ".join(f"{name}: {why}" for name, why in changed.items())
    raise ConfigError(
        f"run folder {run_dir} holds stages made with other settings ({listed}); "
        f"nothing was changed. Redo them with {flags} (their folders are kept as "
        f"<stage>.previous), or give another --out"
    )
