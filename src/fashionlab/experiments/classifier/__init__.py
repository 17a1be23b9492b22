"""Problem 2: the MLP classifier — its search spaces, the Optuna study that tunes it on a
validation split, and the retrain of the chosen setting with its one test.

From the bottom up: ``space`` (the search spaces and the flat settings), ``config`` (the study's
and the retrain's settings), ``objective`` (one trial, the sampler and pruner), ``storage`` (the
RDB storage and the study in it), ``workers`` (the trial loop, local worker processes, dead
trials), ``export`` (trials.csv, trials.json, best.json), ``tune`` (:func:`hyperparam_tuning`)
and ``retrain`` (:func:`run_classifier`).
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "space": ("SPACES", "BASELINES", "settings_from_params"),
        "config": (
            "DEFAULT_TRIALS",
            "RETRAIN_EPOCHS",
            "TuneConfig",
            "ClassifierConfig",
            "retrain_config",
        ),
        "objective": ("suggest_params",),
        "storage": ("open_storage", "redact", "sqlite_url"),
        "export": ("export_study",),
        "tune": ("TuneResult", "hyperparam_tuning"),
        "retrain": (
            "ClassifierResult",
            "run_classifier",
            "plot_last_iterations",
            "format_last_iterations",
            "format_side_by_side",
        ),
    },
)
