"""The export of a study: trials.csv, trials.json and best.json (``docs/run-directory.md``)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from ....atomic import atomic_write_json, atomic_write_text
from ....errors import FashionLabError
from ..config import TuneConfig
from ..space import setting_from_searched, settings_from_params
from .storage import count, redact

__all__ = ["export_study", "runs_of", "best_pair", "rank_correlation", "spearman", "NOT_RECORDED"]

_CSV_BASE = (
    "number",
    "state",
    "value",
    "val_acc",
    "val_loss",
    "best_epochs",
    "diverged",
    "epochs_run",
    "duration_s",
    "datetime_start",
    "datetime_complete",
    "run",
)

NOT_RECORDED = "(not recorded)"  # the run of a trial written before runs were recorded


def _trial_record(trial) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": dict(trial.params),
        "intermediate_values": {int(k): v for k, v in sorted(trial.intermediate_values.items())},
        "user_attrs": dict(trial.user_attrs),
        "duration_s": duration,
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": trial.datetime_complete.isoformat()
        if trial.datetime_complete
        else None,
    }


def _csv_text(records: list[dict[str, Any]]) -> str:
    import csv
    import io

    names = sorted({name for record in records for name in record["params"]})
    rungs = sorted({int(step) for record in records for step in record["intermediate_values"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        list(_CSV_BASE) + [f"val_acc_{r}" for r in rungs] + [f"param_{name}" for name in names]
    )
    for record in records:
        attrs = record["user_attrs"]
        row = [
            record["number"],
            record["state"],
            record["value"],
            attrs.get("val_acc"),
            attrs.get("val_loss"),
            attrs.get("best_epochs"),
            attrs.get("diverged"),
            attrs.get("epochs_run"),
            record["duration_s"],
            record["datetime_start"],
            record["datetime_complete"],
            attrs.get("run"),
        ]
        row += [record["intermediate_values"].get(r) for r in rungs]
        writer.writerow(
            ["" if v is None else v for v in row] + [record["params"].get(n, "") for n in names]
        )
    return buffer.getvalue()


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None for fewer than 3 pairs or a
    constant list."""
    import numpy as np

    if len(xs) < 3:
        return None

    def ranks(values: list[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = np.argsort(values, kind="stable")
        rank = np.empty(len(values))
        rank[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):  # ties: their mean rank
            tied = values == value
            rank[tied] = rank[tied].mean()
        return rank

    a, b = ranks(xs), ranks(ys)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _finished(study) -> list:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)


def best_pair(study) -> tuple[Any, int, float] | None:
    """The best (trial, rung epochs, value) over every rung value of the finished trials (COMPLETE
    or PRUNED: each rung value is that of a finished run of that length); ties go to the earlier
    trial, then the shorter run. None when no trial has a rung value."""
    best = None
    for trial in _finished(study):
        for step, value in sorted(trial.intermediate_values.items()):
            if best is None or value > best[2]:
                best = (trial, int(step), float(value))
    return best


def rank_correlation(study, rungs: tuple[int, ...]) -> dict[str, Any]:
    """How well the first rung predicts the top: Spearman's rank correlation between the first-
    and the top-rung values of the trials that reached the top rung."""
    first, top = rungs[0], rungs[-1]
    pairs = [
        (t.intermediate_values[first], t.intermediate_values[top])
        for t in _finished(study)
        if first in t.intermediate_values and top in t.intermediate_values
    ]
    return {
        "first_rung": first,
        "top_rung": top,
        "trials": len(pairs),
        "spearman": (
            spearman([p[0] for p in pairs], [p[1] for p in pairs]) if top != first else None
        ),
    }


def runs_of(trials, run: str | None) -> dict[str, Any]:
    """Which runs wrote the trials of a study shared by several run folders.

    Counts the trials that started (any state but WAITING) by their ``run`` user attribute;
    ``run`` is this run's name. Returns ``this`` (``run``), ``trials`` (name -> count;
    :data:`NOT_RECORDED` for trials that name no run), ``by_others`` (trials another run wrote)
    and ``not_recorded``.
    """
    from optuna.trial import TrialState

    by_run = Counter(
        t.user_attrs.get("run", NOT_RECORDED) for t in trials if t.state != TrialState.WAITING
    )
    unnamed = by_run.get(NOT_RECORDED, 0)
    return {
        "this": run,
        "trials": dict(sorted(by_run.items())),
        "by_others": sum(by_run.values()) - by_run.get(run, 0) - unnamed,
        "not_recorded": unnamed,
    }


def export_study(
    out_dir: str | os.PathLike[str],
    study,
    config: TuneConfig,
    storage_url: str,
    seconds: float = 0.0,
    run: str | None = None,
) -> dict[str, Any]:
    """Write trials.csv, trials.json and best.json (atomically) from the storage; return best.json's
    dict. The pick is :func:`best_pair`: its setting with ``epochs`` = its best rung. ``run``
    names this run (the ``run`` user attribute of the trials it wrote): ``runs`` counts the
    trials other runs wrote into the same study (:func:`runs_of`).

    Raises:
        FashionLabError: no finished trial has a rung value yet.
    """
    out_dir = Path(out_dir)
    trials = study.get_trials(deepcopy=False)
    records = [_trial_record(t) for t in sorted(trials, key=lambda t: t.number)]
    header = {
        "schema_version": 1,
        "study": study.study_name,
        "space": config.space,
        "storage": redact(storage_url),
        "direction": "maximize",
        "runs": runs_of(trials, run),
    }
    atomic_write_text(out_dir / "trials.csv", _csv_text(records))
    correlation = rank_correlation(study, config.epochs)
    atomic_write_json(
        out_dir / "trials.json", header | {"rank_correlation": correlation, "trials": records}
    )
    counts = count(study)
    pair = best_pair(study)
    if pair is None:
        raise FashionLabError(
            f"study {study.study_name!r} has no finished trial with a rung value ({counts}); "
            f"run more trials (see {out_dir / 'trials.csv'})"
        )
    best_trial, epochs, value = pair
    params = full_params(best_trial.params, config) | {"epochs": epochs}
    model_config, train_config = settings_from_params(params, seed=best_trial.user_attrs["seed"])
    attrs = best_trial.user_attrs
    rung = attrs.get("rungs", []).index(epochs) if epochs in attrs.get("rungs", []) else None
    best = header | {
        "number": best_trial.number,
        "state": best_trial.state.name,
        "value": value,
        "epochs": epochs,
        "val_acc": value,
        "val_loss": attrs["rung_val_loss"][rung] if rung is not None else None,
        "searched": dict(best_trial.params),
        "params": params,
        "model": model_config,
        "train": train_config.to_dict(),
        "seed": attrs.get("seed"),
        "written_by": attrs.get("run"),
        "rank_correlation": correlation,
        "counts": counts,
        "train_examples": attrs.get("train_examples"),
        "val_examples": attrs.get("val_examples"),
        "config": config.to_dict() | {"storage": redact(storage_url)},
        "seconds": seconds,
    }
    best.pop("direction")
    atomic_write_json(out_dir / "best.json", best)
    return best


def full_params(searched: dict[str, Any], config: TuneConfig) -> dict[str, Any]:
    """A searched setting with the keys the space fixes (no ``epochs``)."""
    fixed = {"nesterov": False, "schedule": "wsd", "decay": config.decay}
    if config.space == "plain":
        fixed |= {"activation": "relu", "batchnorm": False, "dropout": 0.0}
    return fixed | setting_from_searched(searched)
