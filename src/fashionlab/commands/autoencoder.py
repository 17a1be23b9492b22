"""``fashionlab autoencoder``: train the 784-128-64-128-784 autoencoder and analyse its code."""

from __future__ import annotations

import argparse

from . import writes_run_dir


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "autoencoder", parents=[common], help="dense autoencoder: train, reconstructions, latent map, probes",
        description="Train the dense autoencoder 784-128-64-128-784 (ReLU, sigmoid output) with MSE + Adam, "
                    "then write the checkpoint, the reconstruction figure, a 2-D map of the 64-d codes, "
                    "linear-probe accuracies and metrics.json into <out>/autoencoder.")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 20; 2 with --quick)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=None, help="minibatch size (default 32)")
    parser.add_argument("--images", type=int, nargs=2, metavar=("I", "J"), default=None,
                        help="test-set indices of the two images in the reconstruction figure "
                             "(default: the first test image and the next one of another class)")
    parser.add_argument("--latent-map", choices=("pca", "tsne"), default=None,
                        help="2-D map of the codes: pca (default) or tsne (on 3,000 test codes unless "
                             "--latent-points)")
    parser.add_argument("--latent-points", type=int, default=None,
                        help="test codes on the map (default: all for pca, 3000 for tsne)")
    parser.add_argument("--textbook-loader", action="store_true",
                        help="feed training through torchvision FashionMNIST + ToTensor + DataLoader "
                             "instead of the fast in-memory loader (same tensors, slower)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on a stratified subset of this many images (default: all 60,000)")
    parser.add_argument("--probe-train-size", type=int, default=None,
                        help="training images the linear probes are fit on (default 10000; 0 = all 60,000)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 epochs on 5,000 images, small probes (seconds)")
    parser.set_defaults(func=writes_run_dir(_run))


def _config(args: argparse.Namespace):  # -> AutoencoderConfig
    from fashionlab.autoencoder import AutoencoderConfig

    overrides = {name: value for name, value in (
        ("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size),
        ("images", tuple(args.images) if args.images else None), ("latent_map", args.latent_map),
        ("latent_points", args.latent_points), ("train_size", args.train_size),
    ) if value is not None}
    if args.probe_train_size is not None:
        overrides["probe_train_size"] = args.probe_train_size or None
    if args.textbook_loader:
        overrides["loader"] = "textbook"
    overrides["seed"] = args.seed
    return AutoencoderConfig.quick(**overrides) if args.quick else AutoencoderConfig(**overrides)


def _run(args: argparse.Namespace) -> int:
    from fashionlab.autoencoder import run_autoencoder
    from fashionlab.commands import stage_dir

    config = _config(args)  # a ConfigError here stops before any data is loaded
    out = stage_dir(args, "autoencoder")
    run = run_autoencoder(out, config, device=args.device, progress=not args.no_progress, data_dir=args.data_dir)
    m = run.metrics
    print(f"test MSE {m['test_mse']:.5f} after {m['epochs']} epochs (batch {m['batch_size']}, Adam lr {m['lr']:g}, "
          f"{m['seconds_per_epoch']:.1f} s/epoch)")
    print(f"linear probe test accuracy: codes {m['probe_code_accuracy']:.4f}, raw pixels "
          f"{m['probe_pixel_accuracy']:.4f} (fit on {m['probe']['train_size']} training images)")
    print(f"wrote {out}/ ({', '.join(sorted(p.name for p in run.files))}) in {run.seconds:.1f} s")
    return 0
