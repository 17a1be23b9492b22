"""The export of a study: trials.csv, trials.json and best.json (``docs/run-directory.md``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import FashionLabError
from ...utils import atomic_write_json, atomic_write_text
from .config import TuneConfig
from .space import settings_from_params
from .storage import count, redact

__all__ = ["export_study"]

_CSV_BASE = (
    "number",
    "state",
    "value",
    "val_acc",
    "val_loss",
    "diverged",
    "epochs_run",
    "last_step",
    "duration_s",
    "datetime_start",
    "datetime_complete",
)


def _trial_record(trial) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": dict(trial.params),
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
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(_CSV_BASE) + [f"param_{name}" for name in names])
    for record in records:
        attrs = record["user_attrs"]
        row = [
            record["number"],
            record["state"],
            record["value"],
            attrs.get("val_acc"),
            attrs.get("val_loss"),
            attrs.get("diverged"),
            attrs.get("epochs_run"),
            attrs.get("last_step"),
            record["duration_s"],
            record["datetime_start"],
            record["datetime_complete"],
        ]
        writer.writerow(
            ["" if v is None else v for v in row] + [record["params"].get(n, "") for n in names]
        )
    return buffer.getvalue()


def export_study(
    out_dir: str | os.PathLike[str],
    study,
    config: TuneConfig,
    storage_url: str,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """Write trials.csv, trials.json and best.json (atomically) from the storage; return best.json's
    dict.

    Raises:
        FashionLabError: the study has no COMPLETE trial yet.
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
    }
    atomic_write_text(out_dir / "trials.csv", _csv_text(records))
    atomic_write_json(out_dir / "trials.json", header | {"trials": records})
    counts = count(study)
    try:
        best_trial = study.best_trial
    except ValueError:
        raise FashionLabError(
            f"study {study.study_name!r} has no completed trial ({counts}); "
            f"run more trials (see {out_dir / 'trials.csv'})"
        ) from None
    fixed = {"nesterov": False, "schedule": config.schedule}
    if config.space == "plain":
        fixed |= {"activation": "relu", "batchnorm": False, "dropout": 0.0}
    params = fixed | dict(best_trial.params)
    model_config, train_config = settings_from_params(params, seed=config.seed)
    attrs = best_trial.user_attrs
    best = header | {
        "number": best_trial.number,
        "value": best_trial.value,
        "val_acc": attrs.get("val_acc", best_trial.value),
        "val_loss": attrs.get("val_loss"),
        "searched": dict(best_trial.params),
        "params": params,
        "model": model_config,
        "train": train_config.to_dict(),
        "counts": counts,
        "train_examples": attrs.get("train_examples"),
        "val_examples": attrs.get("val_examples"),
        "config": config.to_dict() | {"storage": redact(storage_url)},
        "seconds": seconds,
    }
    best.pop("direction")
    atomic_write_json(out_dir / "best.json", best)
    return best
