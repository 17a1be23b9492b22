"""``fashionlab train``: train one explicit MLP setting on the training images and test it once.

Writes ``<run>/train/`` (model.pt, history.json, last20.png/.pdf, test.json; see
:mod:`fashionlab.experiments.classifier`).
"""

from __future__ import annotations

import argparse

from . import count_or_all, force_option, stage_dir, writes_run_dir


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "train",
        parents=[common],
        help="train one MLP setting on all 60,000 training images and test it",
        description="Train one explicit MLP setting with minibatch SGD on all 60,000 training "
        "images (no tuning), evaluate it once on the test set, and draw the last 20 SGD "
        "iterations. Defaults: the plain space's reference row (3x50 ReLU, momentum SGD 0.9, "
        "lr 0.03, L2 1e-3, minibatches of 64, warmup-stable-decay schedule) for the longest run "
        "the plain study scores (18 epochs).",
    )
    parser.add_argument(
        "--model",
        default="mlp_3x50",
        help="model name mlp_<layers>x<units>[_bn][_do<p>][_<activation>] (default mlp_3x50)",
    )
    parser.add_argument("--epochs", type=int, default=18, help="epochs (default 18)")
    parser.add_argument("--batch-size", type=int, default=64, help="minibatch size (default 64)")
    parser.add_argument("--lr", type=float, default=0.03, help="learning rate (default 0.03)")
    parser.add_argument(
        "--momentum", type=float, default=0.9, help="SGD momentum, 0 for plain SGD (default 0.9)"
    )
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    parser.add_argument(
        "--l2", type=float, default=1e-3, help="L2 strength on the weight matrices (default 1e-3)"
    )
    parser.add_argument(
        "--schedule",
        choices=("wsd", "cosine", "constant"),
        default="wsd",
        help="learning-rate schedule (default wsd: constant, then linear to 0 over the last "
        "20 %% of the epochs)",
    )
    parser.add_argument(
        "--max-train",
        type=count_or_all,
        default=None,
        help="train on a subset of this many images, or 'all' (default all)",
    )
    force_option(parser)
    parser.set_defaults(func=writes_run_dir(_handle, ("train",)))


def _handle(args: argparse.Namespace) -> int:
    from fashionlab.experiments.classifier import (
        ClassifierConfig,
        format_last_iterations,
        run_classifier,
    )
    from fashionlab.models import model_from_name
    from fashionlab.runtime import resolve_device

    model = model_from_name(args.model)
    params = {
        key: model.config[key]
        for key in ("hidden_layers", "units", "activation", "batchnorm", "dropout")
    }
    params |= {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "momentum": args.momentum,
        "nesterov": args.nesterov,
        "l2": args.l2,
        "schedule": args.schedule,
    }
    config = ClassifierConfig(
        epochs=args.epochs,
        max_train=args.max_train,
        label=model.name,
        seeds=(args.seed,),
        device=str(resolve_device(args.device)),
    )
    outcome = run_classifier(
        stage_dir(args, "train"),
        params,
        config,
        data_dir=args.data_dir,
        progress=not args.no_progress,
    )
    print(format_last_iterations(outcome.test))
    print(f"checkpoint, history, last20.png/.pdf, test.json: {outcome.out_dir}")
    return 0
