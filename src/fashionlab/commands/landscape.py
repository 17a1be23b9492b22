"""``fashionlab landscape``: loss landscape along the top-2 PCA directions of the SGD trajectory."""

from __future__ import annotations

import argparse
import json

from . import config_option, config_values, count_or_all, force_option, stage_dir, writes_run_dir

CONFIG = "fashionlab.experiments.landscape.config:LandscapeConfig"


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "landscape",
        parents=[common],
        help="loss landscape along the SGD trajectory's top-2 PCA directions",
        description="Train the landscape model with parameter snapshots, take the top-2 PCA "
        "directions of the trajectory, evaluate f_CE on a grid of that plane (many points per "
        "forward pass) and write trajectory.npz, surface.npz, landscape.png/.pdf/.html and "
        "landscape.json into <out>/landscape (Li et al. 2018).",
    )
    model = parser.add_argument_group("model and training")
    config_option(
        model,
        CONFIG,
        "model",
        "--model",
        help="registry name (mlp_4x50, mlp_3x256_bn_do0.1) or an MLP config as JSON",
    )
    for path, kind, text in (
        ("train.epochs", int, "training epochs (the cap under the plateau rule)"),
        ("train.batch_size", int, "minibatch size"),
        ("train.lr", float, "SGD learning rate"),
        ("train.momentum", float, "SGD momentum"),
        ("train.l2", float, "L2 on the weight matrices"),
    ):
        flag = "--" + path.split(".")[1].replace("_", "-")
        config_option(model, CONFIG, path, flag, type=kind, help=text, quick=True)
    for field, kind, text in (
        ("plateau_tol", float, "relative improvement of the subset loss per epoch that counts"),
        ("plateau_patience", int, "epochs without it before the learning rate is cut"),
        ("lr_decay", float, "factor of each learning-rate cut"),
        ("lr_decays", int, "cuts before the next plateau ends training"),
    ):
        config_option(model, CONFIG, field, "--" + field.replace("_", "-"), type=kind, help=text)
    data = model.add_mutually_exclusive_group()
    config_option(
        data,
        CONFIG,
        "subset",
        "--subset",
        type=count_or_all,
        help="training examples (stratified), or 'all'",
    )
    data.add_argument("--full", action="store_true", help="train on all 60,000 training images")
    grid = parser.add_argument_group("trajectory and grid")
    for field, kind, text in (
        ("snapshots_per_epoch", float, "parameter snapshots per epoch"),
        ("runs", int, "training runs from different initialisations (2+: a joint-PCA plane)"),
        ("resolution", int, "grid points per axis"),
        ("margin", float, "extra grid range per side, as a fraction of the path's extent"),
        ("margin_growths", int, "times a side's margin may double until each basin is inside"),
        ("basin_tol", float, "basin criterion: final loss above the basin minimum / loss range"),
        ("max_snapshots", int, "snapshots kept per run, evenly along the path"),
        ("eval_examples", int, "training examples the heights are evaluated on (fixed subset)"),
        ("memory_budget_mb", float, "memory for one chunk of grid points, in MB"),
    ):
        config_option(
            grid, CONFIG, field, "--" + field.replace("_", "-"), type=kind, help=text, quick=True
        )
    config_option(
        parser,
        CONFIG,
        "threads",
        "--threads",
        type=int,
        help="torch CPU threads (none: torch's choice; 1: no OpenMP threads spin on shared cores)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: at most 3 epochs, 11 x 11 grid"
    )
    force_option(parser)
    parser.set_defaults(func=writes_run_dir(_run, ("landscape",)))


def _model_spec(text: str) -> object:
    from fashionlab.errors import ConfigError

    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"--model {text!r} is not valid JSON ({exc}); give a registry name such as "
                f"mlp_4x50 or a JSON object of MLP settings"
            ) from exc
    return text


def config_from_args(args: argparse.Namespace):  # -> LandscapeConfig
    """The :class:`LandscapeConfig` the options describe (``--quick`` first, then each option)."""
    import dataclasses

    from fashionlab.experiments.landscape.config import LandscapeConfig
    from fashionlab.train import TrainConfig

    base = LandscapeConfig.quick() if args.quick else LandscapeConfig()
    train = {**config_values(args, TrainConfig), "seed": args.seed}
    changes = {
        **config_values(args, LandscapeConfig),
        "seed": args.seed,
        "train": dataclasses.replace(base.train, **train),
    }
    if args.full:
        changes["subset"] = None
    if "model" in changes:
        changes["model"] = _model_spec(changes["model"])
    return dataclasses.replace(base, **changes)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # refuses bad settings before any data is read
    from fashionlab.experiments.landscape import run_landscape

    run = run_landscape(
        stage_dir(args, "landscape"),
        config,
        data_dir=args.data_dir,
        device=args.device,
        progress=not args.no_progress,
    )
    summary = run.summary
    ratio = summary["explained_variance_ratio"]
    print(
        f"landscape: {summary['model']}, {summary['runs']} run(s), {summary['n_snapshots']} "
        f"snapshots; explained variance PC1 {100 * ratio[0]:.1f}%, PC2 {100 * ratio[1]:.1f}%"
    )
    print(
        f"grid {summary['grid']['resolution']}x{summary['grid']['resolution']} at "
        f"{summary['grid_points_per_second']:.0f} points/s; final loss "
        f"{summary['final_loss']:.4f}; {run.seconds:.1f} s"
    )
    for path in run.files:
        print(f"wrote {path}")
    return 0
