"""Problem 1: He initialization, derived and checked numerically, and a depth experiment.

``config`` (settings) -> ``identities`` (Monte-Carlo checks) and ``depth`` (variance through
depth) -> ``plots`` -> ``stage`` (:func:`run_heinit`, the stage directory).
"""

from __future__ import annotations

from .config import HeInitConfig
from .depth import SCHEME_LABELS, SCHEMES, DepthCurve, DepthResult, depth_experiment, init_std
from .identities import (
    FORMULAS,
    HeInitResult,
    IdentityCheck,
    KaimingCheck,
    kaiming_cross_check,
    verify_he_init,
)
from .stage import RESULTS_FILE, HeInitRun, results_dict, run_heinit

__all__ = [
    "HeInitConfig", "IdentityCheck", "KaimingCheck", "HeInitResult", "DepthCurve", "DepthResult",
    "HeInitRun", "SCHEMES", "SCHEME_LABELS", "FORMULAS", "RESULTS_FILE", "init_std",
    "verify_he_init", "kaiming_cross_check", "depth_experiment", "results_dict", "run_heinit",
]
