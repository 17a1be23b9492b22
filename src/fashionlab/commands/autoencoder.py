"""``fashionlab autoencoder``: train the 784-128-64-128-784 autoencoder and analyse its code."""

from __future__ import annotations

import argparse

from fashionlab.experiments.autoencoder.config import LOADERS, AutoencoderConfig

from . import config_option, config_values, count_or_all, force_option, stage_dir, writes_run_dir


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "autoencoder",
        parents=[common],
        help="dense autoencoder: train, reconstructions, latent map, probes",
        description="Train the dense autoencoder 784-128-64-128-784 (ReLU, sigmoid output) with "
        "MSE + Adam, then write the checkpoint, the reconstruction figure, a 2-D map of the 64-d "
        "codes, linear-probe accuracies and metrics.json into <out>/autoencoder.",
    )
    for field, flag, kind, text in (
        ("epochs", "--epochs", int, "training epochs"),
        ("lr", "--lr", float, "Adam learning rate"),
        ("batch_size", "--batch-size", int, "minibatch size"),
    ):
        config_option(parser, AutoencoderConfig, field, flag, type=kind, help=text, quick=True)
    config_option(
        parser,
        AutoencoderConfig,
        "images",
        "--images",
        type=int,
        nargs=2,
        metavar=("I", "J"),
        help="test-set indices of the two images in the reconstruction "
        "figure (none: the first test image and the next one of another class)",
    )
    config_option(
        parser,
        AutoencoderConfig,
        "latent_map",
        "--latent-map",
        choices=("pca", "tsne"),
        help="2-D map of the codes",
    )
    config_option(
        parser,
        AutoencoderConfig,
        "latent_points",
        "--latent-points",
        type=int,
        help="test codes on the map (none: all for pca, 3000 for tsne)",
    )
    config_option(
        parser,
        AutoencoderConfig,
        "loader",
        "--loader",
        choices=LOADERS,
        help="data path: torchvision FashionMNIST + ToTensor + DataLoader (the "
        "assignment's), or the in-memory FastLoader; the same tensors",
    )
    config_option(
        parser,
        AutoencoderConfig,
        "train_size",
        "--train-size",
        type=count_or_all,
        quick=True,
        help="train on a stratified subset of this many images, or 'all'",
    )
    config_option(
        parser,
        AutoencoderConfig,
        "probe_train_size",
        "--probe-train-size",
        type=count_or_all,
        quick=True,
        help="training images the linear probes are fit on, or 'all'",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 epochs on 5,000 images, small probes (seconds)",
    )
    force_option(parser)
    parser.set_defaults(func=writes_run_dir(_run, ("autoencoder",)))


def _config(args: argparse.Namespace) -> AutoencoderConfig:
    overrides = config_values(args, AutoencoderConfig)
    overrides["seed"] = args.seed
    return AutoencoderConfig.quick(**overrides) if args.quick else AutoencoderConfig(**overrides)


def _run(args: argparse.Namespace) -> int:
    from fashionlab.experiments.autoencoder import run_autoencoder

    config = _config(args)  # a ConfigError here stops before any data is loaded
    out = stage_dir(args, "autoencoder")
    run = run_autoencoder(
        out, config, device=args.device, progress=not args.no_progress, data_dir=args.data_dir
    )
    m = run.metrics
    print(
        f"test MSE {m['test_mse']:.5f} after {m['epochs']} epochs (batch {m['batch_size']}, Adam "
        f"lr {m['lr']:g}, {m['seconds_per_epoch']:.1f} s/epoch)"
    )
    print(
        f"linear probe test accuracy: codes {m['probe_code_accuracy']:.4f}, raw pixels "
        f"{m['probe_pixel_accuracy']:.4f} (fit on {m['probe']['train_size']} training images)"
    )
    print(f"wrote {out}/ ({', '.join(sorted(p.name for p in run.files))}) in {run.seconds:.1f} s")
    return 0
