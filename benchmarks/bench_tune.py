"""Tuning throughput and the wall time of ``fashionlab tune`` + retrain with the default settings.

Runs the default study (``TuneConfig()``, plain space) from scratch with 1 and with 2 local
worker processes, and prints trials per minute side by side with the speed-up; then retrains
the best setting with ``ClassifierConfig()`` and prints the tune + retrain wall time and the
test accuracy. Wall times include process start-up and data loading of the workers.

    .venv/bin/python benchmarks/bench_tune.py                 # default: 24 trials, ~2 min on 2
                                                              # idle cores
    .venv/bin/python benchmarks/bench_tune.py --quick         # the --quick settings, ~1 min
    .venv/bin/python benchmarks/bench_tune.py --workers 2     # only the 2-worker study (+ retrain)
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from fashionlab.experiments.classifier import (
    TuneConfig,
    hyperparam_tuning,
    retrain_config,
    run_classifier,
)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the spawned workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=("plain", "variant"), default="plain")
    parser.add_argument(
        "--trials", type=int, default=None, help="trials per study (default: the config's)"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the --quick study and retrain (3 epochs, 10,000 images)",
    )
    parser.add_argument("--no-retrain", action="store_true", help="only the tuning throughput")
    parser.add_argument(
        "--out", default=None, help="folder for the studies (default: a temporary folder)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_tune_"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# bench_tune: {os.cpu_count()} CPUs, load average {load:.2f} at start, results in {out}"
    )

    rows, results = [], {}
    for workers in args.workers:
        overrides = {"space": args.space, "workers": workers}
        if args.trials is not None:
            overrides["n_trials"] = args.trials
        config = TuneConfig.quick(**overrides) if args.quick else TuneConfig(**overrides)
        start, cpu = time.perf_counter(), _cpu_seconds()
        result = hyperparam_tuning(out / f"tune_w{workers}", config)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        results[workers] = (result, seconds)
        rows.append(
            (
                workers,
                result.counts["finished"],
                result.counts["pruned"],
                seconds,
                cpu,
                60 * result.counts["finished"] / seconds,
                result.best["val_acc"],
            )
        )

    base = rows[0][5]
    print(
        f"\n{'workers':>7} {'trials':>6} {'pruned':>6} {'wall s':>8} {'cpu s':>8} "
        f"{'trials/min':>10} {'vs first':>8} {'best val acc':>12}"
    )
    for workers, trials, pruned, seconds, cpu, per_minute, best in rows:
        print(
            f"{workers:>7} {trials:>6} {pruned:>6} {seconds:>8.1f} {cpu:>8.1f} {per_minute:>10.2f} "
            f"{per_minute / base:>7.2f}x {100 * best:>11.2f}%"
        )

    if args.no_retrain:
        return 0
    workers = max(results)
    result, tune_seconds = results[workers]
    classifier = retrain_config(args.space, quick=args.quick)
    start, cpu = time.perf_counter(), _cpu_seconds()
    outcome = run_classifier(out / f"classifier_w{workers}", result.best_params, classifier)
    retrain_seconds, retrain_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    tune_cpu = rows[list(results).index(workers)][4]
    print(f"\n{'stage':<28} {'wall s':>8} {'cpu s':>8}")
    print(f"{f'tune ({workers} workers)':<28} {tune_seconds:>8.1f} {tune_cpu:>8.1f}")
    print(f"{'retrain + test':<28} {retrain_seconds:>8.1f} {retrain_cpu:>8.1f}")
    print(
        f"{'tune + retrain':<28} {tune_seconds + retrain_seconds:>8.1f} "
        f"{tune_cpu + retrain_cpu:>8.1f}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# load average {load:.2f} at the end (other processes share the cores when it is "
        "above ~2)"
    )
    print(f"\nbest setting {result.best['searched']}")
    print(
        f"test accuracy {100 * outcome.test_accuracy:.2f}% after {outcome.test['epochs']} epochs "
        f"on {outcome.test['train_examples']} images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
