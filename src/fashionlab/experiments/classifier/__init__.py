"""Problem 2: the MLP classifier — its search spaces, the Optuna study that tunes it on a
validation split, and the retrain of the chosen setting with its one test.

From the bottom up: ``space`` (the search spaces and the flat settings), ``config`` (the study's
and the retrain's settings), ``objective`` (one trial, the sampler and pruner), ``storage`` (the
RDB storage and the study in it), ``rungs`` (the fidelity: a WSD trunk with a decay branch per
rung), ``workers`` (the trial loop, local worker processes, dead trials), ``export``
(trials.csv, trials.json, best.json), ``reference`` (the hand recipe with the same protocol),
``tune`` (:func:`hyperparam_tuning`)
and ``retrain`` (:func:`run_classifier`).
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "space": ("SPACES", "REFERENCE", "settings_from_params"),
        "config": (
            "DEFAULT_TRIALS",
            "TuneConfig",
            "ClassifierConfig",
            "retrain_config",
        ),
        "objective": ("suggest_params",),
        "rungs": ("train_rungs", "fork_epoch"),
        "storage": ("open_storage", "redact", "sqlite_url"),
        "export": ("export_study", "spearman"),
        "tune": ("TuneResult", "hyperparam_tuning"),
        "retrain": (
            "ClassifierResult",
            "run_classifier",
            "plot_last_iterations",
            "format_last_iterations",
            "format_side_by_side",
        ),
        "seeds": ("train_seeds",),
    },
)
