"""``fashionlab run``: the study's stages run in order into one run directory.

``table`` says what a stage is; ``engine`` runs any stage table (cached, resumable, locked), its
stages in ``workers`` processes when they are independent, with ``provenance`` in run.json and
the output checksums and forced moves of ``run_folder``; ``stages`` is the study's table, the
only module that knows every experiment; ``study`` puts the two together (:func:`run_study`).
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "table": ("StudyConfig", "Stage", "StageContext", "StageOutcome"),
        "engine": ("run_stages",),
        "study": ("load_study_config", "check_study", "run_study", "stage_order", "study_config"),
        "stages": ("STAGES",),
    },
)
