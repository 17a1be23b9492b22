"""Seconds per autoencoder epoch: the fast in-memory path against the textbook DataLoader + ToTensor loop.

Both rows run the same training loop (``fashionlab.experiments.autoencoder.train_autoencoder``: flatten, forward,
MSE, zero_grad, backward, Adam step, then the test MSE) from the same seed and initial weights;
only the data path differs:

* fast: ``FastLoader`` — uint8 images kept in memory, float batches ``x / 255`` by shuffled index;
* textbook: ``DataLoader(torchvision.datasets.FashionMNIST(transform=ToTensor()), shuffle=True)``
  (a PIL image and a ``ToTensor`` call per sample, then ``default_collate``), for training and test.

A second column times the data path alone (one pass over the training set, no model). Example::

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
from fashionlab.experiments.autoencoder import AutoencoderConfig, make_loaders, train_autoencoder
from fashionlab.models import Autoencoder
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
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per path, alternating the paths; the median is reported (default 3)")
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
    loaders = {}
    for path in PATHS:
        config = dataclasses.replace(defaults, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                     loader=path, num_workers=args.workers)
        loaders[path] = (config, *make_loaders(config, train, test, data_dir=args.data_dir))
    times: dict[str, dict[str, list[float]]] = {path: {"epoch": [], "data": [], "mse": []} for path in PATHS}
    # Alternate the paths so that a busy spell of a shared machine does not fall on one path only.
    for repeat in range(args.repeats):
        for path in (PATHS if repeat % 2 == 0 else reversed(PATHS)):
            config, train_batches, test_batches = loaders[path]
            times[path]["data"].append(data_only_seconds(train_batches))
            seed_everything(args.seed)  # same initial weights on both paths and in every repeat
            fit = train_autoencoder(Autoencoder(), train_batches, config, test_batches=test_batches)
            times[path]["epoch"].append(fit.seconds / args.epochs)
            times[path]["mse"].append(fit.history.test_mse[-1])
    median = {path: {key: statistics.median(values) for key, values in row.items()} for path, row in times.items()}
    print(f"autoencoder 784-128-64-128-784, {len(train):,} training images, batch {args.batch_size}, Adam; "
          f"median of {args.repeats} run(s) of {args.epochs} epoch(s) per path; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {args.workers} DataLoader worker(s), "
          f"{os.cpu_count()} CPU(s) visible")
    print(f"{'path':<34}{'s/epoch (train + test MSE)':>28}{'data only s/epoch':>19}{'test MSE':>10}   runs (s/epoch)")
    for path, label in PATHS.items():
        row = median[path]
        runs = " ".join(f"{t:.1f}" for t in times[path]["epoch"])
        print(f"{label:<34}{row['epoch']:>28.2f}{row['data']:>19.3f}{row['mse']:>10.5f}   {runs}")
    fast, textbook = median["fast"], median["textbook"]
    print(f"{'ratio textbook / fast':<34}{textbook['epoch'] / fast['epoch']:>27.2f}x"
          f"{textbook['data'] / fast['data']:>18.1f}x")


if __name__ == "__main__":
    main()
