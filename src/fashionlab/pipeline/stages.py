"""The stage table of ``fashionlab run``: thin adapters from the pipeline to each library stage.

Each stage declares its config dataclass; its ``resolve`` builds that config from the study (the
named preset of the config that ``fashionlab run`` uses, then the stage's config-file table on top)
and its ``run`` receives the same object. Summaries are small dicts; ``headline`` is the line of the
final table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ..atomic import read_json
from ..errors import ConfigError
from ..experiments.autoencoder.config import AutoencoderConfig
from ..experiments.classifier.config import ClassifierConfig, TuneConfig
from ..experiments.heinit.config import HeInitConfig
from ..experiments.landscape.config import TUNED, LandscapeConfig
from ..report.config import ReportConfig
from ..validation import check_table, nearest
from .table import Stage, StageContext, StudyConfig

__all__ = ["STAGES", "check_tables", "check_stages"]


# --- He initialization ----------------------------------------------------------------------------


def _heinit_resolve(study: StudyConfig) -> HeInitConfig:
    settings = {"seed": study.seed, **study.stage_overrides("heinit")}
    return HeInitConfig.quick(**settings) if study.quick else HeInitConfig.from_dict(settings)


def _heinit_run(out: Path, config: HeInitConfig, ctx: StageContext) -> dict[str, Any]:
    from ..experiments.heinit import run_heinit

    run_heinit(out, config, progress=ctx.progress)
    identities = read_json(out / "results.json")["identities"]
    agree = sum(row["holds"] == row["expected_to_hold"] for row in identities)
    return {
        "identities": len(identities),
        "as_expected": agree,
        "headline": f"{agree}/{len(identities)} identity verdicts as the assumptions predict",
    }


# --- tuning and retraining ------------------------------------------------------------------------


def _tune_resolve(study: StudyConfig, *, space: str, stage: str) -> TuneConfig:
    # The stage sets the space and the device itself (a config-file table may not: _FIXED).
    settings = {
        "seed": study.seed,
        **study.stage_overrides(stage),
        "space": space,
        "device": study.device,
    }
    return TuneConfig.quick(**settings) if study.quick else TuneConfig.from_dict(settings)


def _tune_run(out: Path, config: TuneConfig, ctx: StageContext) -> dict[str, Any]:
    from ..experiments.classifier import hyperparam_tuning

    result = hyperparam_tuning(out, config, data_dir=ctx.study.data_dir, progress=ctx.progress)
    best, reference = result.best, result.reference
    summary = {
        "best_params": best["params"],
        "val_acc": best["val_acc"],
        "epochs": best["epochs"],
        "number": best["number"],
        "counts": best["counts"],
        "rank_correlation": best["rank_correlation"]["spearman"],
        "reference_params": reference["params"] if reference else None,
        "reference_val_acc": reference["val_acc"] if reference else None,
        "headline": f"best of {best['counts'].get('finished', '?')} trials: val acc "
        f"{best['val_acc']:.4f} (trial {best['number']}, {best['epochs']} epochs)",
    }
    if reference:
        summary["headline"] += f"; reference {reference['val_acc']:.4f}"
    return summary


def _classifier_resolve(study: StudyConfig, *, label: str, stage: str) -> ClassifierConfig:
    overrides = {**study.stage_overrides(stage), "device": study.device}
    return ClassifierConfig.retrain(label, quick=study.quick, seed=study.seed, **overrides)


def _classifier_run(
    out: Path, config: ClassifierConfig, ctx: StageContext, *, tune_stage: str
) -> dict[str, Any]:
    from ..experiments.classifier import run_classifier

    tuned = ctx.upstream[tune_stage]
    # best.json whole (the cache checked it): the ablation reuses the study's run of the pick.
    best = read_json(ctx.run_dir / tune_stage / "best.json")
    result = run_classifier(out, best, config, data_dir=ctx.study.data_dir, progress=ctx.progress)
    test = result.test
    summary = {
        "test_accuracy": test["test_accuracy"],
        "test_accuracy_std": test["test_accuracy_std"],
        "model_name": test["model_name"],
        "model": test["model"],
        "params": test["params"],
        "headline": f"{test['model_name']}: test accuracy {test['test_accuracy']:.4f}",
    }
    if len(test["seeds"]) > 1:
        summary["headline"] += f" ± {test['test_accuracy_std']:.4f} ({len(test['seeds'])} seeds)"
    if tuned.get("reference_params"):  # the reference row: the same retrain, its own length
        reference = run_classifier(
            out / "reference",
            tuned["reference_params"],
            config.for_reference(),
            data_dir=ctx.study.data_dir,
            progress=ctx.progress,
        ).test
        summary["reference_test_accuracy"] = reference["test_accuracy"]
        summary["headline"] += f"; reference {reference['test_accuracy']:.4f}"
    return summary


# --- loss landscape -------------------------------------------------------------------------------


def _landscape_resolve(study: StudyConfig) -> LandscapeConfig:
    settings = {"seed": study.seed, **study.stage_overrides("landscape")}
    return LandscapeConfig.for_study(quick=study.quick, **settings)


def _landscape_run(out: Path, config: LandscapeConfig, ctx: StageContext) -> dict[str, Any]:
    from ..experiments.landscape import run_landscape

    run = run_landscape(
        out,
        config.with_tuned_model(ctx.upstream["classifier"]["model"]),
        data_dir=ctx.study.data_dir,
        device=ctx.device,
        progress=ctx.progress,
    )
    s = run.summary
    ratio = (s.get("own_plane") or s)["explained_variance_ratio"]  # run 1's own plane
    if s.get("in_basin"):
        basin = "every run ends in its basin" if s.get("runs", 1) > 1 else "ends in its basin"
    else:
        basin = "a run does not end in its basin (landscape.json per_run)"
    return {
        "explained_variance_ratio": ratio,
        "final_loss": s["final_loss"],
        "in_basin": bool(s.get("in_basin")),
        "headline": f"run 1's PCA plane explains {100 * ratio[0]:.1f} % + {100 * ratio[1]:.1f} % "
        f"of its path; final loss {s['final_loss']:.4f}; {basin}",
    }


# --- autoencoder ----------------------------------------------------------------------------------


def _autoencoder_resolve(study: StudyConfig) -> AutoencoderConfig:
    settings = {"seed": study.seed, **study.stage_overrides("autoencoder")}
    if study.quick:
        return AutoencoderConfig.quick(**settings)
    return AutoencoderConfig.from_dict(settings)


def _autoencoder_run(out: Path, config: AutoencoderConfig, ctx: StageContext) -> dict[str, Any]:
    from ..experiments.autoencoder import run_autoencoder

    run = run_autoencoder(
        out,
        config,
        device=ctx.device,
        progress=ctx.progress,
        data_dir=ctx.study.data_dir,
    )
    m = run.metrics
    return {
        "test_mse": m["test_mse"],
        "probe_code_accuracy": m["probe_code_accuracy"],
        "probe_pixel_accuracy": m["probe_pixel_accuracy"],
        "headline": f"test MSE {m['test_mse']:.5f}; probe on codes {m['probe_code_accuracy']:.3f} "
        f"vs pixels {m['probe_pixel_accuracy']:.3f}",
    }


# --- report ---------------------------------------------------------------------------------------


def _report_resolve(study: StudyConfig) -> ReportConfig:
    return ReportConfig.from_dict(study.stage_overrides("report"))


def _report_run(out: Path, config: ReportConfig, ctx: StageContext) -> dict[str, Any]:
    from ..report import build_report

    path = build_report(ctx.run_dir, authors=config.authors, course=config.course)
    out.mkdir(parents=True, exist_ok=True)
    return {"pdf": str(path), "headline": f"{path} ({path.stat().st_size // 1024} kB)"}


# Table order is also the start order when stages run in parallel (``jobs > 1``): the long
# tuning chains first, the independent autoencoder fills the gap while the variant waits.
# The tuning budget: a study resumes with more (or fewer) trials, another time limit or other
# workers, and stays one study (what a trial's value means is checked by the study itself).
TUNE_BUDGET = ("n_trials", "direct", "rounds", "timeout_s", "workers", "threads", "heartbeat_s")

# Functions and partials of them, not closures: a stage travels to its worker process by pickle.
STAGES: tuple[Stage[Any], ...] = (
    Stage(
        "heinit",
        (),
        HeInitConfig,
        _heinit_resolve,
        _heinit_run,
        "He initialization: identities and depth",
    ),
    Stage(
        "tune",
        (),
        TuneConfig,
        partial(_tune_resolve, space="plain", stage="tune"),
        _tune_run,
        "tuning the plain MLP (Optuna)",
        in_place=TUNE_BUDGET,
    ),
    Stage(
        "tune_variant",
        (),
        TuneConfig,
        partial(_tune_resolve, space="variant", stage="tune_variant"),
        _tune_run,
        "tuning the variant (BatchNorm / Dropout / activations)",
        in_place=TUNE_BUDGET,
    ),
    Stage(
        "classifier",
        ("tune",),
        ClassifierConfig,
        partial(_classifier_resolve, label="plain", stage="classifier"),
        partial(_classifier_run, tune_stage="tune"),
        "retraining the best plain MLP and testing it",
    ),
    Stage(
        "variant",
        ("tune_variant",),
        ClassifierConfig,
        partial(_classifier_resolve, label="variant", stage="variant"),
        partial(_classifier_run, tune_stage="tune_variant"),
        "retraining the best variant and testing it",
    ),
    Stage(
        "landscape",
        ("classifier",),
        LandscapeConfig,
        _landscape_resolve,
        _landscape_run,
        "loss landscape along the SGD path",
    ),
    Stage(
        "autoencoder",
        (),
        AutoencoderConfig,
        _autoencoder_resolve,
        _autoencoder_run,
        "dense autoencoder",
    ),
    Stage(
        "report",
        ("heinit", "classifier", "variant", "landscape", "autoencoder"),
        ReportConfig,
        _report_resolve,
        _report_run,
        "report.pdf",
        outputs=("report.pdf",),
        in_place=("authors", "course"),  # a new cover rebuilds the report, nothing else
    ),
)


# --- checks before the first stage -------------------------------------------------------------


_DEVICE = "the study's --device sets it for every stage"
# Keys a table may not set, because the stage sets them itself.
_FIXED: dict[str, dict[str, str]] = {
    "tune": {
        "space": "[tune] searches the plain space, [tune_variant] the variant",
        "device": _DEVICE,
    },
    "tune_variant": {
        "space": "[tune_variant] searches the variant space, [tune] the plain",
        "device": _DEVICE,
    },
    "classifier": {"label": "the stage names its model plain", "device": _DEVICE},
    "variant": {"label": "the stage names its model variant", "device": _DEVICE},
}
# The Fashion-MNIST files each stage reads (``data.find_source``'s ``which``; None: none).
_FILES: dict[str, str | None] = {
    "heinit": None,
    "tune": "train",
    "tune_variant": "train",
    "classifier": "all",
    "variant": "all",
    "landscape": "train",
    "autoencoder": "all",
    "report": None,
}


def check_tables(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check the config-file tables (one per stage) key by key against the stage's config
    dataclass; return them ready to resolve (``"all"`` as None).

    Raises:
        ConfigError: an unknown table or key (naming the nearest known one), or a value of the
            wrong type or shape.
    """
    _check_table_names(overrides)
    config = {stage.name: stage.config for stage in STAGES}
    return {
        name: check_table(f"[{name}]", values, config[name], _FIXED.get(name))
        for name, values in overrides.items()
    }


def _check_table_names(overrides: Mapping[str, Any]) -> None:
    names = [stage.name for stage in STAGES]
    for name in overrides:
        if name not in names:
            raise ConfigError(
                f"unknown stage table [{name}]{nearest(name, names)} (stages: {', '.join(names)})"
            )


def check_stages(study: StudyConfig, names: Sequence[str]) -> None:
    """Build every stage's config and the landscape's model; find the files ``names`` read.

    Raises:
        ConfigError: a table that names no stage, or an impossible setting, named with its
            stage table.
        DataError: a Fashion-MNIST file that one of ``names`` reads is missing.
    """
    from ..data import check_torchvision_root, find_source
    from ..experiments.landscape import build_landscape_model

    _check_table_names(study.overrides)
    resolved = {stage.name: _within(stage.name, stage.resolve, study) for stage in STAGES}
    model = resolved["landscape"].model
    if model != TUNED:  # the classifier's architecture, known once it has run
        try:
            build_landscape_model(model)
        except ConfigError as exc:
            raise ConfigError(
                f"[landscape] model = {model!r}: {exc}; or leave model out for "
                f"the tuned architecture"
            ) from exc
    needs = {_FILES[name] for name in names} - {None}
    if needs:
        find_source(study.data_dir, "all" if "all" in needs else "train")
    if "autoencoder" in names and resolved["autoencoder"].loader == "torchvision":
        check_torchvision_root()  # the cache it writes: a read-only HOME is found now, not later


def _within(name: str, build: Callable[[Any], Any], argument: Any) -> Any:
    """``build(argument)``, its ConfigError prefixed with the stage table it concerns."""
    try:
        return build(argument)
    except ConfigError as exc:
        raise ConfigError(f"[{name}] {exc}") from exc
