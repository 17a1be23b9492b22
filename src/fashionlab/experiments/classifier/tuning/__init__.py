"""The Optuna machinery of the classifier's tuning (``hyperparam_tuning``).

From the bottom up: ``rungs`` (the fidelity: a WSD trunk with a decay branch per rung),
``objective`` (one trial's setting and value, the sampler and the asynchronous pruner),
``brackets`` (synchronous successive halving: trials asked together, trained as populations),
``storage`` (the RDB storage and the study in it), ``workers`` (the loop of trials or brackets,
local worker processes, dead trials), ``export`` (trials.csv, trials.json, best.json),
``figures``, ``reference`` (the hand recipe with the same protocol) and ``tune``
(:func:`hyperparam_tuning`).
"""

from __future__ import annotations

from ...._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "objective": ("suggest_params",),
        "rungs": ("train_rungs", "fork_epoch"),
        "storage": ("open_storage", "redact", "sqlite_url"),
        "export": ("export_study", "spearman"),
        "tune": ("TuneResult", "hyperparam_tuning"),
    },
)
