"""``fashionlab tune``: the Optuna study of the MLP classifier, then the retrain and the test.

Writes ``<run>/tune/`` (``<run>/tune_variant/`` for ``--space variant``) and, unless
``--no-retrain``, ``<run>/classifier/`` (``<run>/variant/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import (
    config_option,
    config_values,
    count_or_all,
    force_option,
    run_dir,
    writes_run_dir,
)

TUNE = "fashionlab.experiments.classifier.config:TuneConfig"
CLASSIFIER = "fashionlab.experiments.classifier.config:ClassifierConfig"

if TYPE_CHECKING:
    from fashionlab.experiments.classifier import ClassifierConfig, TuneConfig, TuneResult

STAGES = {"plain": ("tune", "classifier"), "variant": ("tune_variant", "variant")}


def _epoch_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 3,6,9, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def _setting(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f'expected a JSON object like \'{{"lr": 0.03, "units": 50}}\', got {text!r} ({exc.msg})'
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


# The study's options in --help order: (TuneConfig field, flag, config_option keywords).
STUDY_OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "space",
        "--space",
        {
            "choices": ("plain", "variant"),
            "help": "plain: 3-5 hidden layers of 30-50 ReLU units; variant: BatchNorm/Dropout/"
            "LeakyReLU/ELU/PReLU, wider layers",
        },
    ),
    (
        "n_trials",
        "--trials",
        {
            "type": int,
            "quick": True,
            "help": "trials to have finished (COMPLETE or PRUNED) in the study; none: 60 for "
            "the plain space, 39 for the variant",
        },
    ),
    (
        "storage",
        "--storage",
        {
            "help": "Optuna storage URL; none: sqlite:///<run>/tune/study.db. "
            "postgresql://user@host/db shares a study between machines (the password from "
            "PGPASSWORD or ~/.pgpass; one in the URL is never printed or saved)",
        },
    ),
    ("study_name", "--study", {"help": "study name; none: fashionlab-<space>"}),
    (
        "workers",
        "--workers",
        {"type": int, "help": "local worker processes on the study (1 is reproducible)"},
    ),
    (
        "max_train",
        "--max-train",
        {
            "type": count_or_all,
            "quick": True,
            "help": "training examples per trial (a subset of the 50,000), or 'all'",
        },
    ),
    (
        "epochs",
        "--epochs",
        {
            "type": _epoch_list,
            "quick": True,
            "help": "the rung lengths, increasing (none: 6,18,54 for the plain space, 2,6,18 for "
            "the variant): each trial is scored after runs of these many epochs and the study "
            "picks the best (setting, length) on validation",
        },
    ),
    (
        "pruner",
        "--pruner",
        {
            "choices": ("asha", "sha", "none"),
            "help": "asha: a trial goes on past a rung only while in the top 1/3 there; sha: "
            "brackets of trials asked together and trained as populations, the top 1/3 of a "
            "whole bracket promoted at each rung; none: every trial runs every rung",
        },
    ),
    (
        "bracket",
        "--bracket",
        {
            "type": int,
            "help": "trials per bracket of --pruner sha (none: 27 for the plain space, 9 for the "
            "variant; with other rungs, 3^(rungs - 1))",
        },
    ),
    (
        "direct",
        "--direct",
        {
            "type": int,
            "help": "--pruner sha: trials that train straight to the top rung, a bracket with "
            "no early stopping at the end of each round (none: 12 of the plain default's 120 "
            "trials, 3 of the variant's 39; 0 with other rungs)",
        },
    ),
    (
        "rounds",
        "--rounds",
        {
            "type": int,
            "help": "--pruner sha: the study runs in this many rounds, each its share of the "
            "trials, halving brackets first and its direct bracket last (none: 2 for the plain "
            "space, 1 for the variant; 1 with other rungs)",
        },
    ),
    (
        "timeout_s",
        "--timeout",
        {"type": float, "help": "start no trial after this many seconds"},
    ),
    (
        "heartbeat_s",
        "--heartbeat",
        {
            "type": int,
            "help": "seconds between a running trial's heartbeats; a trial of another machine "
            "silent for twice that plus 60 s is marked FAIL and its setting retried once "
            "(one of this machine: as soon as its process is gone)",
        },
    ),
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "tune",
        parents=[common],
        help="tune the MLP with Optuna, retrain the best setting, test it",
        description="Tune the MLP classifier on a validation split (an Optuna study, resumable: "
        "re-running continues it), then retrain the best setting on all 60,000 training images and "
        "test it once. Several machines share one study with --storage postgresql://... --study "
        "NAME.",
    )
    _study_options(parser.add_argument_group("study"))
    _retrain_options(parser.add_argument_group("retrain and test"))
    force_option(parser)
    parser.set_defaults(func=writes_run_dir(_handle, _writes))


def _study_options(group: argparse._ArgumentGroup) -> None:
    """The study's settings (:data:`STUDY_OPTIONS`), a setting to run first, and --quick."""
    for field, flag, keywords in STUDY_OPTIONS:
        config_option(group, TUNE, field, flag, **keywords)
    group.add_argument(
        "--enqueue",
        type=_setting,
        action="append",
        default=argparse.SUPPRESS,
        dest="enqueue_settings",
        metavar="JSON",
        help="a setting to run first, as a JSON object of searched keys (repeatable); nothing "
        "is enqueued by default",
    )
    group.add_argument(
        "--quick",
        action="store_true",
        help="a small study on 4,000 examples, and a one-seed retrain on 10,000",
    )


def _retrain_options(group: argparse._ArgumentGroup) -> None:
    """Whether to retrain the pick and test it, and the retrain's settings (ClassifierConfig)."""
    group.add_argument(
        "--retrain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="retrain the pick (and the reference row) on all 60,000 training images for the "
        "epochs chosen on validation and test it (default: yes)",
    )
    config_option(
        group,
        CLASSIFIER,
        "epochs",
        "--retrain-epochs",
        type=int,
        dest="retrain_epochs",
        help="epochs of the retrain",
    )
    config_option(
        group,
        CLASSIFIER,
        "max_train",
        "--retrain-max-train",
        type=count_or_all,
        dest="retrain_max_train",
        quick=True,
        help="retrain on a subset of this many training images, or 'all'",
    )


def _writes(args: argparse.Namespace) -> tuple[str, ...]:
    """The folders under the run directory that this tuning (and its retrain) writes."""
    tune_stage, retrain_stage = STAGES[getattr(args, "space", "plain")]
    return (tune_stage, retrain_stage) if args.retrain else (tune_stage,)


def _handle(args: argparse.Namespace) -> int:
    from fashionlab.experiments.classifier import hyperparam_tuning
    from fashionlab.runtime import resolve_device

    device = str(resolve_device(args.device))
    config = _tune_config(args, device)
    # The retrain's settings and the test files are checked before any trial trains.
    classifier = _retrain_config(args, config.space, device) if args.retrain else None
    tune_stage, retrain_stage = STAGES[config.space]
    result = hyperparam_tuning(
        run_dir(args) / tune_stage, config, data_dir=args.data_dir, progress=not args.no_progress
    )
    _print_study(result, config.space)
    if classifier is None:
        return 0
    test = _retrain_and_test(args, result, classifier, run_dir(args) / retrain_stage)
    _print_both_spaces(args, config.space, test)
    return 0


def _tune_config(args: argparse.Namespace, device: str) -> TuneConfig:
    """The study's ``TuneConfig``: the options given, on top of the default or --quick one."""
    from fashionlab.experiments.classifier import TuneConfig

    settings = {**config_values(args, TuneConfig), "seed": args.seed, "device": device}
    if hasattr(args, "enqueue_settings"):
        settings["enqueue"] = tuple(args.enqueue_settings)
    return TuneConfig.quick(**settings) if args.quick else TuneConfig(**settings)


def _retrain_config(args: argparse.Namespace, space: str, device: str) -> ClassifierConfig:
    """The retrain's ``ClassifierConfig``, once the test files are known to be there.

    Raises:
        ConfigError: a retrain option the config refuses.
        DataError: the test files are missing (the message names --no-retrain).
    """
    from fashionlab.data import find_source
    from fashionlab.errors import DataError
    from fashionlab.experiments.classifier import ClassifierConfig
    from fashionlab.validation import check_count

    retrain = {"seed": args.seed, "device": device}
    if hasattr(args, "retrain_epochs"):
        retrain["epochs"] = args.retrain_epochs
    if hasattr(args, "retrain_max_train"):  # named as the option the user typed
        check_count("max_train", args.retrain_max_train, option="retrain-max-train")
        retrain["max_train"] = args.retrain_max_train
    classifier = ClassifierConfig.retrain(space, quick=args.quick, **retrain)
    try:
        find_source(args.data_dir, "all")
    except DataError as exc:
        raise DataError(f"{exc}; or tune only, without the test files: --no-retrain") from exc
    return classifier


def _print_study(result: TuneResult, space: str) -> None:
    """The study's counts, its pick, the rank correlation of its rungs and the reference row."""
    best, counts = result.best, result.counts
    print(
        f"study {result.study_name} ({space}): {counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['fail']} failed trials in {result.storage}; this "
        f"command ran {result.trials_run} in {result.seconds:.0f} s"
    )
    print(
        f"best trial #{best['number']}: validation accuracy {100 * best['val_acc']:.2f}% after "
        f"{best['epochs']} epochs with {best['searched']}"
    )
    correlation = best["rank_correlation"]
    if correlation["spearman"] is not None:
        print(
            f"rank correlation (Spearman) of the {correlation['first_rung']}- and "
            f"{correlation['top_rung']}-epoch values of the {correlation['trials']} trials that "
            f"reached the top rung: {correlation['spearman']:.2f}"
        )
    if result.reference is not None:
        print(
            f"reference row: validation accuracy {100 * result.reference['val_acc']:.2f}% after "
            f"{result.reference['epochs']} epochs"
        )
    print(f"trials: {result.out_dir / 'trials.csv'}  best: {result.out_dir / 'best.json'}")


def _retrain_and_test(
    args: argparse.Namespace, result: TuneResult, classifier: ClassifierConfig, out: Path
) -> dict[str, Any]:
    """Retrain the pick (and the reference row, beside it) into ``out``, test it, print it;
    return the pick's test record."""
    from fashionlab.experiments.classifier import (
        format_last_iterations,
        format_side_by_side,
        run_classifier,
    )

    progress = not args.no_progress
    outcome = run_classifier(
        out, result.best, classifier, data_dir=args.data_dir, progress=progress
    )
    print(format_last_iterations(outcome.test))
    print(f"checkpoint, history, last20.png/.pdf, test.json: {outcome.out_dir}")
    if result.reference is not None:
        reference = run_classifier(
            out / "reference",
            result.reference["params"],
            classifier.for_reference(),
            data_dir=args.data_dir,
            progress=progress,
        )
        print(format_side_by_side({classifier.label: outcome.test, "reference": reference.test}))
    return outcome.test


def _print_both_spaces(args: argparse.Namespace, space: str, test: dict[str, Any]) -> None:
    """The two spaces' tests side by side, once both retrains have run in this run folder."""
    from fashionlab.atomic import read_json
    from fashionlab.experiments.classifier import format_side_by_side

    tests = {}
    for other, (_, stage) in STAGES.items():
        path = run_dir(args) / stage / "test.json"
        if path.is_file():
            tests[other] = test if other == space else read_json(path)
    if len(tests) > 1:
        print(format_side_by_side(tests))
