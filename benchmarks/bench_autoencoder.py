"""Seconds per autoencoder epoch: the fast in-memory path against the textbook DataLoader + ToTensor loop.

Both rows run the same training loop (``fashionlab.autoencoder.train_autoencoder``: flatten, forward,
MSE, zero_grad, backward, Adam step, then the test MSE) from the same seed and initial weights;
only the data path differs:

* fast: ``FastLoader`` — uint8 images kept in memory, float batches ``x / 255`` by shuffled index;
* textbook: ``DataLoader(torchvision.datasets.FashionMNIST(transform=ToTensor()), shuffle=True)``
  (a PIL image and a ``ToTensor`` call per sample, then ``default_collate``), for training and test.

A second column times the data path alone (one pass over the training set, no model). Example::

    python benchmarks/bench_autoencoder.py                 # 1 epoch each, torch's default threads
    python benchmarks/bench_autoencoder.py --epochs 2 --threads 2 --workers 0
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import torch

from fashionlab.autoencoder import Autoencoder, AutoencoderConfig, make_loaders, train_autoencoder
from fashionlab.data import load_test, load_train
from fashionlab.utils import seed_everything

PATHS = {"fast": "fast (FastLoader, in memory)", "textbook": "textbook (DataLoader + ToTensor)"}


def data_only_seconds(batches) -> float:
    """One pass over the batches, touching each tensor: the cost of the data path alone."""
    start = time.perf_counter()
    total = 0.0
    for x, _ in batches:
        total += float(x[0, 0].sum())  # keep the batch alive; negligible work
    return time.perf_counter() - start


def main() -> None:
    defaults = AutoencoderConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed per path (default 1)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"minibatch size (default {defaults.batch_size}, the stage default)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the textbook path (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train, test = load_train(args.data_dir), load_test(args.data_dir)
    rows = {}
    for path in PATHS:
        config = dataclasses.replace(defaults, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                     loader=path, num_workers=args.workers)
        train_batches, test_batches = make_loaders(config, train, test, data_dir=args.data_dir)
        data_only = data_only_seconds(train_batches)
        seed_everything(args.seed)  # same initial weights on both paths
        fit = train_autoencoder(Autoencoder(), train_batches, config, test_batches=test_batches)
        rows[path] = (fit.seconds / args.epochs, data_only, fit.history.test_mse[-1])
    fast, textbook = rows["fast"], rows["textbook"]
    print(f"autoencoder 784-128-64-128-784, {len(train):,} training images, batch {args.batch_size}, Adam, "
          f"{args.epochs} epoch(s) per path; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.workers} DataLoader worker(s), {platform.processor() or platform.machine()}")
    print(f"{'path':<36}{'s/epoch (train + test MSE)':>28}{'data only s/epoch':>20}{'test MSE':>11}")
    for path, label in PATHS.items():
        epoch, data_only, mse = rows[path]
        print(f"{label:<36}{epoch:>28.2f}{data_only:>20.3f}{mse:>11.5f}")
    print(f"{'ratio textbook / fast':<36}{textbook[0] / fast[0]:>27.2f}x{textbook[1] / fast[1]:>19.1f}x")


if __name__ == "__main__":
    main()
