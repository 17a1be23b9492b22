"""``fashionlab tune``: the Optuna study of the MLP classifier, then the retrain and the test.

Writes ``<run>/tune/`` (``<run>/tune_variant/`` for ``--space variant``) and, unless
``--no-retrain``, ``<run>/classifier/`` (``<run>/variant/``).
"""

from __future__ import annotations

import argparse

from . import count_or_all, run_dir, writes_run_dir

STAGES = {"plain": ("tune", "classifier"), "variant": ("tune_variant", "variant")}


def _epoch_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 3,6,9, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "tune", parents=[common], help="tune the MLP with Optuna, retrain the best setting, test it",
        description="Tune the MLP classifier on a validation split (an Optuna study, resumable: re-running "
                    "continues it), then retrain the best setting on all 60,000 training images and test it once. "
                    "Several machines share one study with --storage postgresql://... --study NAME.")
    group = parser.add_argument_group("study")
    group.add_argument("--space", choices=("plain", "variant"), default="plain",
                       help="plain: 3-5 hidden layers of 30-50 ReLU units; variant: BatchNorm/Dropout/"
                            "LeakyReLU/ELU/PReLU, wider layers (default: plain)")
    group.add_argument("--trials", type=int, default=None,
                       help="trials to have finished (COMPLETE or PRUNED) in the study (default 24 plain, 12 variant; "
                            "quick 8)")
    group.add_argument("--storage", default=None,
                       help="Optuna storage URL (default: sqlite:///<run>/tune/study.db); "
                            "postgresql://user:pw@host/db to share a study between machines")
    group.add_argument("--study", default=None, help="study name (default: fashionlab-<space>)")
    group.add_argument("--workers", type=int, default=1, help="local worker processes on the study (default 1; "
                                                              "1 is reproducible)")
    group.add_argument("--max-train", type=count_or_all, default=argparse.SUPPRESS,
                       help="training examples per trial, or 'all' (default 20000; quick 4000)")
    group.add_argument("--epochs", type=_epoch_list, default=None,
                       help="epoch counts the search picks from (default 4,8,12; quick 1,2)")
    group.add_argument("--pruner", choices=("median", "halving", "none"), default="median",
                       help="prune hopeless trials by per-epoch validation accuracy (default median)")
    group.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    group.add_argument("--heartbeat", type=int, default=10,
                       help="seconds between a running trial's heartbeats; a trial of another "
                            "machine silent for twice that plus 60 s is marked FAIL and its "
                            "setting retried once (one of this machine: as soon as its process "
                            "is gone) (default 10)")
    group.add_argument("--quick", action="store_true", help="a ~20-second study on 4,000 examples, "
                                                          "and a short retrain on 10,000")
    retrain = parser.add_argument_group("retrain and test")
    retrain.add_argument("--retrain", action=argparse.BooleanOptionalAction, default=True,
                         help="retrain the best setting on all 60,000 training images and test it (default: yes)")
    retrain.add_argument("--retrain-epochs", type=int, default=None,
                         help="epochs of the retrain (default 30; quick 3)")
    retrain.add_argument("--retrain-max-train", type=count_or_all, default=argparse.SUPPRESS,
                         help="retrain on a subset of this many training images, or 'all' (default all; quick 10000)")
    parser.set_defaults(func=writes_run_dir(_handle))


def _handle(args: argparse.Namespace) -> int:
    from fashionlab.data import find_source
    from fashionlab.errors import DataError
    from fashionlab.experiments.classifier import (
        ClassifierConfig,
        TuneConfig,
        format_last_iterations,
        format_side_by_side,
        hyperparam_tuning,
        quick_classifier_config,
        quick_tune_config,
        run_classifier,
    )
    from fashionlab.utils import read_json, resolve_device
    from fashionlab.validation import check_count

    device = str(resolve_device(args.device))
    settings = {"space": args.space, "seed": args.seed, "workers": args.workers, "storage": args.storage,
                "study_name": args.study, "pruner": args.pruner, "timeout_s": args.timeout,
                "heartbeat_s": args.heartbeat, "device": device}
    for key, value in (("n_trials", args.trials), ("epochs", args.epochs)):
        if value is not None:
            settings[key] = value
    if hasattr(args, "max_train"):  # None means all examples, so "not given" is a missing attribute
        settings["max_train"] = args.max_train
    config = quick_tune_config(**settings) if args.quick else TuneConfig(**settings)
    classifier = None
    if args.retrain:  # its settings and the test files are checked before any trial trains
        retrain = {"label": args.space, "seed": args.seed, "device": device}
        if args.retrain_epochs is not None:
            retrain["epochs"] = args.retrain_epochs
        if hasattr(args, "retrain_max_train"):
            check_count("max_train", args.retrain_max_train, option="retrain-max-train")
            retrain["max_train"] = args.retrain_max_train
        make = quick_classifier_config if args.quick else ClassifierConfig
        classifier = make(**retrain)
        try:
            find_source(args.data_dir, "all")
        except DataError as exc:
            raise DataError(f"{exc}; or tune only, without the test files: --no-retrain") from exc
    tune_stage, retrain_stage = STAGES[args.space]
    result = hyperparam_tuning(run_dir(args) / tune_stage, config, data_dir=args.data_dir,
                               progress=not args.no_progress)
    best, counts = result.best, result.counts
    print(f"study {result.study_name} ({args.space}): {counts['complete']} complete, {counts['pruned']} pruned, "
          f"{counts['fail']} failed trials in {result.storage}; this command ran {result.trials_run} "
          f"in {result.seconds:.0f} s")
    print(f"best trial #{best['number']}: validation accuracy {100 * best['val_acc']:.2f}% with {best['searched']}")
    print(f"trials: {result.out_dir / 'trials.csv'}  best: {result.out_dir / 'best.json'}")
    if classifier is None:
        return 0
    outcome = run_classifier(run_dir(args) / retrain_stage, result.best_params, classifier, data_dir=args.data_dir,
                             progress=not args.no_progress)
    print(format_last_iterations(outcome.test))
    print(f"checkpoint, history, last20.png/.pdf, test.json: {outcome.out_dir}")
    tests = {}
    for space, (_, stage) in STAGES.items():
        path = run_dir(args) / stage / "test.json"
        if path.is_file():
            tests[space] = outcome.test if space == args.space else read_json(path)
    if len(tests) > 1:
        print(format_side_by_side(tests))
    return 0

