"""``fashionlab train``: train one explicit MLP setting on the training images and test it once.

Writes ``<run>/train/`` (model.pt, history.json, last20.png/.pdf, test.json; see
:mod:`fashionlab.experiments.classifier`).
"""

from __future__ import annotations

import argparse

from . import config_option, config_values, count_or_all, force_option, stage_dir, writes_run_dir

RECIPE = "fashionlab.experiments.classifier.recipe:PlainRecipe"


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "train",
        parents=[common],
        help="train one MLP setting on all 60,000 training images and test it",
        description="Train one explicit MLP setting with minibatch SGD on all 60,000 training "
        "images (no tuning), evaluate it once on the test set, and draw the last 20 SGD "
        "iterations. Left out, an option takes the plain recipe: the plain space's reference row "
        "(a person's recipe, the one the tuning study must beat) with the WSD schedule.",
    )
    config_option(
        parser,
        RECIPE,
        "model",
        "--model",
        help="model name mlp_<layers>x<units>[_bn][_do<p>][_<activation>]",
    )
    for field, kind, text in (
        ("epochs", int, "epochs"),
        ("batch_size", int, "minibatch size"),
        ("lr", float, "learning rate"),
        ("momentum", float, "SGD momentum, 0 for plain SGD"),
        ("l2", float, "L2 strength on the weight matrices"),
    ):
        config_option(parser, RECIPE, field, "--" + field.replace("_", "-"), type=kind, help=text)
    config_option(
        parser, RECIPE, "nesterov", "--nesterov", action="store_true", help="Nesterov momentum"
    )
    config_option(
        parser,
        RECIPE,
        "schedule",
        "--schedule",
        choices=("wsd", "cosine", "constant"),
        help="learning-rate schedule (wsd: constant, then linear to 0 over the last epochs)",
    )
    config_option(
        parser,
        RECIPE,
        "max_train",
        "--max-train",
        type=count_or_all,
        help="train on a subset of this many images, or 'all'",
    )
    force_option(parser)
    parser.set_defaults(func=writes_run_dir(_handle, ("train",)))


def _handle(args: argparse.Namespace) -> int:
    from fashionlab.experiments.classifier import (
        ClassifierConfig,
        format_last_iterations,
        run_classifier,
    )
    from fashionlab.experiments.classifier.recipe import PlainRecipe
    from fashionlab.models import model_from_name
    from fashionlab.runtime import resolve_device

    recipe = PlainRecipe(**config_values(args, PlainRecipe))
    params = recipe.params()
    config = ClassifierConfig(
        epochs=recipe.epochs,
        max_train=recipe.max_train,
        label=model_from_name(recipe.model).name,
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
