"""Seconds per epoch of K seeds of one setting: one after another with ``fit`` versus in
lockstep as one population (``fit_population``, what the retrain's ``train_seeds`` does).

Two settings, on the 50,000 training images of the seed-0 split, one torch thread:

* plain: MLP 784-50-50-50-10, batch 64 (per-op overhead dominates a step);
* variant: MLP 784-256-256-10 with BatchNorm and dropout 0.2, batch 128 (arithmetic dominates).

For each it prints the seconds per epoch (wall clock and this process's CPU time, which a busy
machine disturbs less) of K seeds trained one after another with ``fit``, of K seeds as one
population, of one seed as a population (K = 1: the stacking's own overhead, and the base of the
amortisation), and the ratios. No validation: the timings are training alone.

    .venv/bin/python benchmarks/bench_seeds.py                # 2 epochs each, K = 3
    .venv/bin/python benchmarks/bench_seeds.py --epochs 1 --only plain
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch

from fashionlab.data import load_train_val
from fashionlab.population import fit, fit_population, seeded_model
from fashionlab.threads import pin_threads
from fashionlab.train import TrainConfig

SETTINGS = {
    "plain": ({"hidden_layers": 3, "units": 50}, {"batch_size": 64, "lr": 0.05}),
    "variant": (
        {"hidden_layers": 2, "units": 256, "batchnorm": True, "dropout": 0.2},
        {"batch_size": 128, "lr": 0.05},
    ),
}


def _seconds(
    model_config: dict, config: TrainConfig, train, seeds: list[int]
) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of K fits one after another, of one population of the K seeds, and
    of a population of the first seed alone."""
    times = []
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in seeds:
        fit(seeded_model(model_config, seed), train, replace(config, seed=seed))
    times.append((time.perf_counter() - wall, time.process_time() - cpu))
    for group in (seeds, seeds[:1]):
        wall, cpu = time.perf_counter(), time.process_time()
        models = [seeded_model(model_config, seed) for seed in group]
        fit_population(models, train, [replace(config, seed=seed) for seed in group])
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--seeds", type=int, default=3, help="K, the number of seeds (default 3)")
    parser.add_argument("--only", choices=sorted(SETTINGS), default=None, help="one setting only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    pin_threads(args.threads)
    train, _ = load_train_val(val_size=10_000, seed=0)
    seeds = list(range(args.seeds))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# bench_seeds: {len(train)} images, {args.epochs} epochs, K = {args.seeds}, "
        f"{args.threads} thread(s), torch {torch.__version__}, load average {load:.2f} at start"
    )
    print(
        f"{'setting':<8} {'clock':<5} {'fit x K':>8} {'stacked K':>10} {'stacked 1':>10} "
        f"{'fit x K / stacked K':>20} {'stacked K / stacked 1':>22}   (s/epoch, all K seeds)"
    )
    for name, (model_config, train_kwargs) in SETTINGS.items():
        if args.only and name != args.only:
            continue
        config = TrainConfig(epochs=args.epochs, momentum=0.9, **train_kwargs)
        seconds = _seconds(model_config, config, train, seeds)
        for clock, column in (("wall", 0), ("cpu", 1)):
            per = [t[column] / args.epochs for t in seconds]
            print(
                f"{name:<8} {clock:<5} {per[0]:>8.2f} {per[1]:>10.2f} {per[2]:>10.2f} "
                f"{per[0] / per[1]:>20.2f} {per[1] / per[2]:>22.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
