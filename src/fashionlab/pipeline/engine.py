"""The engine of ``fashionlab run``: a stage table run in order into one run directory, cached,
resumable and locked. It knows no experiment: the table (``stages.py``) is an argument.

Contract (the files and the rules of caching, forcing and refusing: ``docs/run-directory.md``):
each stage's config is resolved once, its canonical dict (``to_dict()``, passwords hidden) is
recorded and hashed with the seed, the device and the hashes of the stages it depends on, and the
same config object is handed to the stage's ``run``. A stage is cached when its ``stage.json``
has that hash and its recorded outputs are intact; a folder made with other settings is refused
before anything is written; one process writes a run folder at a time; ``jobs`` changes the wall
time, never the numbers (every stage runs on one CPU thread).
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
    stages: tuple[Stage[Any], ...],
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
    plan = _plan(stages, study)
    record: dict[str, Any] = _read_record(run_dir / "run.json") or {}
    markers = {stage.name: _read_record(run_dir / stage.name / STAGE_FILE) for stage in stages}
    # Nothing is written before this check: a folder never mixes settings.
    redo = downstream(stages, force)
    _refuse_changed_settings(
        run_dir, stages, plan.shown, plan.settings, device, record, markers, redo
    )
    _move_aside_forced_and_broken(run_dir, stages, redo, markers, echo)
    run = _Run(run_dir, study, plan, record, progress and jobs == 1, echo)
    todo = run.sort(stages, markers, only)
    run.write_record(todo)
    if jobs <= 1 or len(todo) <= 1:
        for stage in todo:
            echo(f"[{stage.name}] {stage.title or stage.name} ...")
            run.finish(stage, *run_stage(stage, *run.arguments(stage)))
    else:
        schedule(todo, jobs, run.summaries, lambda st: (st, *run.arguments(st)), run.finish, echo)
    return [run.outcomes[stage.name] for stage in stages if stage.name in run.outcomes]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Each stage's config (what it runs with), as recorded (passwords hidden) and its hashes."""

    configs: dict[str, Any]
    shown: dict[str, dict[str, Any]]
    hashes: dict[str, str]  # the cache key: own settings and the hashes of the stages upstream
    settings: dict[str, str]  # what a folder may not mix: a stage's own settings


def _plan(stages: Sequence[Stage[Any]], study: StudyConfig) -> _Plan:
    configs = {stage.name: stage.resolve(study) for stage in stages}
    # Hashed, compared and saved with its secrets hidden; the stage runs with the config as given.
    shown = {name: redact_tree(config.to_dict()) for name, config in configs.items()}
    hashes: dict[str, str] = {}
    settings: dict[str, str] = {}
    for stage in stages:
        own = {"seed": study.seed, "device": study.device}
        upstream = [hashes[d] for d in stage.depends]
        hashes[stage.name] = _hash({"config": shown[stage.name], **own, "upstream": upstream})
        kept = {k: v for k, v in shown[stage.name].items() if k not in stage.in_place}
        settings[stage.name] = _hash({"config": kept, **own})
    return _Plan(configs, shown, hashes, settings)


def _move_aside_forced_and_broken(
    run_dir: Path,
    stages: Sequence[Stage[Any]],
    redo: set[str],
    markers: dict[str, dict[str, Any] | None],
    echo: Callable[[str], None],
) -> None:
    """Move the folders of forced stages, and of stages whose database was cut short (it cannot
    be resumed: the stage starts afresh), to ``<stage>.previous``."""
    for stage in stages:
        if stage.name in redo and any((run_dir / p).exists() for p in (stage.name, *stage.outputs)):
            previous = move_aside(run_dir, stage.name, stage.outputs)
            markers[stage.name] = None
            echo(f"[{stage.name}] forced: previous outputs moved to {previous}")
    for stage in stages:
        broken = broken_database(run_dir / stage.name)
        if broken is not None:
            previous = move_aside(run_dir, stage.name, stage.outputs)
            markers[stage.name] = None
            echo(f"[{stage.name}] {broken}: its folder moved to {previous}, running it again")


class _Run:
    """The run once its settings are checked: which stages are cached, run.json, each stage's
    arguments and its stage.json when it finishes."""

    def __init__(
        self,
        run_dir: Path,
        study: StudyConfig,
        plan: _Plan,
        record: dict[str, Any],
        progress: bool,
        echo: Callable[[str], None],
    ) -> None:
        self.run_dir, self.study, self.plan, self.record = run_dir, study, plan, record
        self.progress, self.echo = progress, echo
        self.summaries: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, StageOutcome] = {}

    def sort(
        self,
        stages: Sequence[Stage[Any]],
        markers: dict[str, dict[str, Any] | None],
        only: Sequence[str] | None,
    ) -> list[Stage[Any]]:
        """Take the cached stages' summaries; return the stages to run, in order.

        Raises:
            ConfigError: a stage to run needs one that is neither cached nor run now.
        """
        todo: list[Stage[Any]] = []
        again: set[str] = set()  # stages with a finished record that run again
        for stage in stages:
            done = markers[stage.name]
            if done is not None:
                reason = self._why_again(stage, done, again | {t.name for t in todo})
                if reason is None:
                    self.summaries[stage.name] = done["summary"]
                    self.outcomes[stage.name] = StageOutcome(
                        stage.name, "cached", done["seconds"], done["summary"]
                    )
                    self.echo(f"[{stage.name}] cached ({done['seconds']:.1f} s when it ran)")
                    continue
                self.echo(f"[{stage.name}] {reason}: running it again")
                again.add(stage.name)
            if only is None or stage.name in only:
                todo.append(stage)
        names = {t.name for t in todo}
        for stage in todo:  # every dependency must be cached or run now
            for dep in stage.depends:
                if dep not in self.summaries and dep not in names:
                    raise ConfigError(
                        f"stage {dep!r} is needed before {stage.name!r}; run without --only, "
                        f"or add --only {dep}"
                    )
        for name in again:  # a stage that runs again is not done until it has finished again
            (self.run_dir / name / STAGE_FILE).unlink(missing_ok=True)
        return todo

    def _why_again(self, stage: Stage[Any], done: dict[str, Any], rerun: set[str]) -> str | None:
        if done.get("config_hash") == self.plan.hashes[stage.name]:
            return _why_not_cached(self.run_dir, stage, done, rerun)
        # Its own settings are the same (checked before): an in-place change or an input.
        return _why_changed(stage, done, self.plan.shown[stage.name], rerun)

    def write_record(self, todo: Sequence[Stage[Any]]) -> None:
        """Write run.json before the first stage runs."""
        study, record = self.study, self.record
        record.update(
            {
                "seed": study.seed,
                "device": study.device,
                "quick": study.quick,
                "config": self.plan.shown,
                "stage_hashes": self.plan.hashes,
                "stage_settings": self.plan.settings,
                "versions": versions(),
                "git": git_commit(),
                "data": data_checksums(study.data_dir),
                "command": redact_command(sys.argv),
                "calibration": calibration() if todo else record.get("calibration"),
                "stage_seconds": record.get("stage_seconds", {}),
            }
        )
        atomic_write_json(self.run_dir / "run.json", record)

    def arguments(self, stage: Stage[Any]) -> tuple[Path, Any, StageContext]:
        """What :func:`run_stage` passes to ``stage.run``: its folder, config and context."""
        upstream = {d: self.summaries[d] for d in stage.depends}
        context = StageContext(self.run_dir, self.study, self.study.device, self.progress, upstream)
        return self.run_dir / stage.name, self.plan.configs[stage.name], context

    def finish(self, stage: Stage[Any], summary: dict[str, Any], seconds: float) -> None:
        """Write the stage's stage.json (last: the stage is done when it exists) and run.json."""
        name = stage.name
        atomic_write_json(
            self.run_dir / name / STAGE_FILE,
            {
                "stage": name,
                "config_hash": self.plan.hashes[name],
                "settings_hash": self.plan.settings[name],
                "config": self.plan.shown[name],
                "device": self.study.device,
                "summary": summary,
                "seconds": seconds,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "outputs": record_outputs(self.run_dir, self.run_dir / name, stage.outputs),
            },
        )
        self.record["stage_seconds"][name] = seconds
        atomic_write_json(self.run_dir / "run.json", self.record)
        self.summaries[name] = summary
        self.outcomes[name] = StageOutcome(name, "ran", seconds, summary)
        self.echo(f"[{name}] done in {seconds:.1f} s — {summary.get('headline', '')}")


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
