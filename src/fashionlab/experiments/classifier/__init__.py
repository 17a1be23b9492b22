"""Problem 2: the MLP classifier — its search spaces, the Optuna study that tunes it on a
validation split, and the retrain of the chosen setting with its one test.

From the bottom up: ``space`` (the search spaces and the flat settings), ``config`` (the study's
and the retrain's settings), ``tuning`` (the Optuna study: :func:`hyperparam_tuning`, its trials,
brackets, storage and workers), ``seeds`` and ``ablation`` (a setting's seeds as one population,
the BatchNorm / Dropout arms) and ``stage`` (:func:`run_classifier`: the retrain of the pick and
its one test); ``recipe``: the plain recipe that ``fashionlab train`` trains by default.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "space": ("SPACES", "REFERENCE", "settings_from_params"),
        "config": ("DEFAULT_TRIALS", "TuneConfig", "ClassifierConfig"),
        "tuning.objective": ("suggest_params",),
        "tuning.rungs": ("train_rungs", "fork_epoch"),
        "tuning.storage": ("open_storage", "redact", "sqlite_url"),
        "tuning.export": ("export_study", "spearman"),
        "tuning.tune": ("TuneResult", "hyperparam_tuning"),
        "stage": (
            "ClassifierResult",
            "run_classifier",
            "plot_last_iterations",
            "format_last_iterations",
            "format_side_by_side",
        ),
        "seeds": ("train_seeds",),
    },
)
