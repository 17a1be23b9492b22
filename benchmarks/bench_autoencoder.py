"""Seconds per autoencoder epoch: the torchvision DataLoader paths against the fast in-memory one.

All rows run the same training loop (``fashionlab.experiments.autoencoder.train_autoencoder``:
flatten, forward, MSE, zero_grad, backward, Adam step, then the test MSE) from the same seed and
initial weights; only the data path differs:

* textbook: ``DataLoader(FashionMNIST(transform=ToTensor()), batch_size, shuffle=True)``, as the
  assignment writes it (a PIL image and a ``ToTensor`` call per sample, then ``default_collate``);
* torchvision (the stage's default): the same API, ``ToTensor()`` applied once to the split and a
  ``BatchSampler`` as the DataLoader's ``sampler`` (``batch_size=None``): a batch per fetch;
* fast: ``FastLoader``, uint8 images in memory, float batches ``x / 255`` by shuffled index.

A second column times the data path alone (one pass over the training set, no model); the ratio
rows divide each DataLoader path by the fast one. Example::

    python benchmarks/bench_autoencoder.py                 # 3 alternating 1-epoch runs per path
    python benchmarks/bench_autoencoder.py --batch-size 64 --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

from fashionlab.data import load_test, load_train
from fashionlab.experiments.autoencoder import (
    AutoencoderConfig,
    make_loaders,
    textbook_loader,
    train_autoencoder,
)
from fashionlab.models import Autoencoder
from fashionlab.runtime import seed_everything
from fashionlab.threads import pin_threads

PATHS = {
    "textbook": "textbook (DataLoader, per sample)",
    "torchvision": "torchvision (DataLoader, batched)",
    "fast": "fast (FastLoader, in memory)",
}


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
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per path, alternating the paths; the median is reported (default 3)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"minibatch size (default {defaults.batch_size}, the stage default)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes of both DataLoader paths (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    pin_threads(args.threads or None)
    train, test = load_train(args.data_dir), load_test(args.data_dir)
    loaders = {}
    for path in PATHS:
        loader = "torchvision" if path == "textbook" else path
        config = dataclasses.replace(
            defaults,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            loader=loader,
            num_workers=args.workers,
        )
        if path == "textbook":  # the per-sample loop, for training and for the test MSE
            batches = (
                textbook_loader(
                    True,
                    args.batch_size,
                    seed=args.seed,
                    num_workers=args.workers,
                    data_dir=args.data_dir,
                ),
                textbook_loader(False, 1000, num_workers=args.workers, data_dir=args.data_dir),
            )
        else:
            batches = make_loaders(config, train, test, data_dir=args.data_dir)
        loaders[path] = (config, *batches)
    times: dict[str, dict[str, list[float]]] = {
        path: {"epoch": [], "data": [], "mse": []} for path in PATHS
    }
    # Alternate the paths so that a busy spell of a shared machine does not fall on one path only.
    for repeat in range(args.repeats):
        for path in PATHS if repeat % 2 == 0 else reversed(PATHS):
            config, train_batches, test_batches = loaders[path]
            times[path]["data"].append(data_only_seconds(train_batches))
            seed_everything(args.seed)  # same initial weights on every path and in every repeat
            fit = train_autoencoder(Autoencoder(), train_batches, config, test_batches=test_batches)
            times[path]["epoch"].append(fit.seconds / args.epochs)
            times[path]["mse"].append(fit.history.test_mse[-1])
    median = {
        path: {key: statistics.median(values) for key, values in row.items()}
        for path, row in times.items()
    }
    print(
        f"autoencoder 784-128-64-128-784, {len(train):,} training images, batch "
        f"{args.batch_size}, Adam; median of {args.repeats} run(s) of {args.epochs} epoch(s) "
        f"per path; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{args.workers} DataLoader worker(s), {os.cpu_count()} CPU(s) visible"
    )
    print(
        f"{'path':<36}{'s/epoch (train + test MSE)':>28}{'data only s/epoch':>19}"
        f"{'test MSE':>10}   runs (s/epoch)"
    )
    for path, label in PATHS.items():
        row = median[path]
        runs = " ".join(f"{t:.2f}" for t in times[path]["epoch"])
        print(f"{label:<36}{row['epoch']:>28.2f}{row['data']:>19.3f}{row['mse']:>10.5f}   {runs}")
    fast = median["fast"]
    for path in ("textbook", "torchvision"):
        row = median[path]
        print(
            f"{'ratio ' + path + ' / fast':<36}{row['epoch'] / fast['epoch']:>27.2f}x"
            f"{row['data'] / fast['data']:>18.1f}x"
        )


if __name__ == "__main__":
    main()
