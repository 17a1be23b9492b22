"""Problem 1: He initialization, derived and checked numerically, and a depth experiment.

``config`` (settings) -> ``identities`` (Monte-Carlo checks) and ``depth`` (variance through
depth) -> ``plots`` -> ``stage`` (:func:`run_heinit`, the stage directory).
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "config": ("HeInitConfig",),
        "depth": (
            "SCHEMES",
            "SCHEME_LABELS",
            "DepthCurve",
            "DepthResult",
            "depth_experiment",
            "init_std",
        ),
        "identities": (
            "FORMULAS",
            "HeInitResult",
            "IdentityCheck",
            "KaimingCheck",
            "kaiming_cross_check",
            "verify_he_init",
        ),
        "stage": ("RESULTS_FILE", "HeInitRun", "results_dict", "run_heinit"),
    },
)
