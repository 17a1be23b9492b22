"""``fashionlab landscape``: loss landscape along the top-2 PCA directions of the SGD trajectory."""

from __future__ import annotations

import argparse
import json

from . import stage_dir, writes_run_dir


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "landscape", parents=[common], help="loss landscape along the SGD trajectory's top-2 PCA directions",
        description="Train the landscape model with parameter snapshots, take the top-2 PCA directions of "
                    "the trajectory, evaluate f_CE on a grid of that plane (many points per forward pass) and "
                    "write trajectory.npz, surface.npz, landscape.png/.pdf/.html and landscape.json into "
                    "<out>/landscape (Li et al. 2018).")
    model = parser.add_argument_group("model and training (defaults: mlp_4x50, 15 epochs, batch 50, SGD lr 0.05)")
    model.add_argument("--model", default=None,
                       help="registry name (mlp_4x50, mlp_3x256_bn_do0.1) or an MLP config as JSON")
    model.add_argument("--epochs", type=int, default=None)
    model.add_argument("--batch-size", type=int, default=None)
    model.add_argument("--lr", type=float, default=None)
    model.add_argument("--momentum", type=float, default=None)
    model.add_argument("--l2", type=float, default=None)
    data = model.add_mutually_exclusive_group()
    data.add_argument("--subset", type=int, default=None, help="training examples (default 2500, stratified)")
    data.add_argument("--full", action="store_true", help="train on all 60,000 training images")
    grid = parser.add_argument_group("trajectory and grid")
    grid.add_argument("--snapshots-per-epoch", type=float, default=None, help="parameter snapshots per epoch (5)")
    grid.add_argument("--runs", type=int, default=None,
                      help="training runs from different initialisations (1; 2 = joint-PCA plane, both paths)")
    grid.add_argument("--resolution", type=int, default=None, help="grid points per axis (31)")
    grid.add_argument("--margin", type=float, default=None,
                      help="extra grid range per side, fraction of the path's extent (0.25)")
    grid.add_argument("--eval-examples", type=int, default=None,
                      help="training examples the heights are measured on (2500, fixed seeded subset)")
    grid.add_argument("--memory-budget-mb", type=float, default=None,
                      help="memory for one chunk of grid points (128)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster on a crowded machine)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 epochs, 11 x 11 grid")
    parser.set_defaults(func=writes_run_dir(_run))


def _model_spec(text: str) -> object:
    from fashionlab.errors import ConfigError

    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--model {text!r} is not valid JSON ({exc}); give a registry name such as "
                              f"mlp_4x50 or a JSON object of MLP settings") from exc
    return text


def config_from_args(args: argparse.Namespace):  # -> LandscapeConfig
    """The :class:`LandscapeConfig` the options describe (``--quick`` first, then each option)."""
    import dataclasses

    from fashionlab.experiments.landscape import LandscapeConfig

    base = LandscapeConfig.quick() if args.quick else LandscapeConfig()
    train = {key: value for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                           ("lr", args.lr), ("momentum", args.momentum), ("l2", args.l2))
             if value is not None}
    train["seed"] = args.seed
    changes: dict = {"train": dataclasses.replace(base.train, **train), "seed": args.seed}
    for key in ("snapshots_per_epoch", "runs", "resolution", "margin", "eval_examples", "memory_budget_mb",
                "subset", "threads"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.full:
        changes["subset"] = None
    if args.model is not None:
        changes["model"] = _model_spec(args.model)
    return dataclasses.replace(base, **changes)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # refuses bad settings before any data is read
    from fashionlab.experiments.landscape import run_landscape

    run = run_landscape(stage_dir(args, "landscape"), config, data_dir=args.data_dir, device=args.device,
                        progress=not args.no_progress)
    summary = run.summary
    ratio = summary["explained_variance_ratio"]
    print(f"landscape: {summary['model']}, {summary['runs']} run(s), {summary['n_snapshots']} snapshots; "
          f"explained variance PC1 {100 * ratio[0]:.1f}%, PC2 {100 * ratio[1]:.1f}%")
    print(f"grid {summary['grid']['resolution']}x{summary['grid']['resolution']} at "
          f"{summary['grid_points_per_second']:.0f} points/s; final loss {summary['final_loss']:.4f}; "
          f"{run.seconds:.1f} s")
    for path in run.files:
        print(f"wrote {path}")
    return 0
