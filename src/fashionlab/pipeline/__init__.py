"""``fashionlab run``: the study's stages run in order into one run directory.

``engine`` runs any stage table (cached, resumable, locked); ``stages`` is the study's table, the
only module that knows every experiment; ``study`` puts the two together (:func:`run_study`);
``run_folder`` holds the output checksums and the moving aside of forced stages.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "engine": ("StudyConfig", "Stage", "StageContext", "StageOutcome", "run_stages"),
        "study": ("load_study_config", "check_study", "run_study", "stage_order", "study_config"),
        "stages": ("STAGES",),
    },
)
