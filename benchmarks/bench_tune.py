"""The tuner against a plain Optuna loop around a textbook DataLoader trainer, on the same trials.

1. Runs the study (``TuneConfig`` with the options below, one worker) and times it.
2. Replays the same trials with a textbook loop: for every rung each trial reached, a fresh
   ``torch.utils.data.DataLoader`` + ``torch.optim.SGD`` (weight decay on the matrices) run of that
   many epochs with the same WSD schedule (``LambdaLR``), inside ``study.optimize`` of a plain
   Optuna study with those settings enqueued: what one writes without a shared trunk.
3. Prints side by side: model-epochs per second (epochs of some model trained: trunk and decay
   branches for the tuner, every fresh run for the loop), wall time, and the largest difference of
   the rung values; then the rank correlation of first- and top-rung values and the tuner's pick
   against the reference row on validation.

    python benchmarks/bench_tune.py                       # plain space, defaults of TuneConfig
    python benchmarks/bench_tune.py --trials 6 --max-train 10000 --epochs 1,3,9   # ~2 min
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fashionlab.data import load_train_val
from fashionlab.experiments.classifier import (
    TuneConfig,
    hyperparam_tuning,
    settings_from_params,
    suggest_params,
)
from fashionlab.models import MLP
from fashionlab.runtime import seed_everything
from fashionlab.threads import pin_threads
from fashionlab.train import _learning_rate, evaluate, penalised_parameters


def textbook_run(params, seed, epochs, train, val) -> tuple[float, float]:
    """A fresh WSD run of ``epochs`` epochs with DataLoader and torch.optim.SGD: (val acc, s)."""
    model_config, config = settings_from_params(params, seed=seed, epochs=epochs)
    start = time.perf_counter()
    seed_everything(seed)
    model = MLP(**model_config)
    x, y = train.tensors()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    matrices, others = penalised_parameters(model)
    optimizer = torch.optim.SGD(
        [{"params": matrices, "weight_decay": config.l2}, {"params": others}],
        lr=config.lr,
        momentum=config.momentum,
    )
    total = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate(config, step, total) / config.lr
    )
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            scheduler.step()
    _, accuracy = evaluate(model, val)
    return accuracy, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=("plain", "variant"), default="plain")
    parser.add_argument("--trials", type=int, default=None, help="default: the config's")
    parser.add_argument("--max-train", type=int, default=None, help="default: all 50,000")
    parser.add_argument("--epochs", default=None, help="rung lengths, e.g. 1,3,9")
    parser.add_argument("--out", default=None, help="folder (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    pin_threads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_tune_"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# bench_tune: {os.cpu_count()} CPUs, load average {load:.2f}, results in {out}")
    overrides = {"space": args.space, "max_train": args.max_train}
    if args.trials is not None:
        overrides["n_trials"] = args.trials
    if args.epochs:
        overrides["epochs"] = tuple(int(e) for e in args.epochs.split(","))
    config = TuneConfig(**overrides)
    splits = load_train_val(config.val_size, seed=config.seed)
    train, val = splits
    if config.max_train is not None:
        train = train.subset(config.max_train, seed=config.seed)

    start = time.perf_counter()
    result = hyperparam_tuning(out / "tune", config, splits=(train, val))
    tuner_s = time.perf_counter() - start - result.reference["seconds"]
    import optuna

    study = optuna.load_study(study_name=config.name, storage=f"sqlite:///{out / 'tune/study.db'}")
    finished = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    tuner_epochs = sum(
        t.user_attrs["epochs_trained"] for t in finished if "epochs_trained" in t.user_attrs
    )
    # PRUNED trials did not record epochs_trained: their trunk reached the last rung's fork.
    from fashionlab.experiments.classifier import fork_epoch

    for t in finished:
        if "epochs_trained" not in t.user_attrs:
            rungs = sorted(t.intermediate_values)
            tuner_epochs += fork_epoch(rungs[-1], config.decay) + sum(
                r - fork_epoch(r, config.decay) for r in rungs
            )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plain = optuna.create_study(direction="maximize")
    for t in finished:
        plain.enqueue_trial(t.params)
    by_params = {i: t for i, t in enumerate(finished)}
    loop_epochs, differences = 0, []

    def objective(trial) -> float:
        nonlocal loop_epochs
        source = by_params[trial.number]
        params = suggest_params(trial, config)  # the enqueued setting of the tuner's trial
        assert source.params.items() <= params.items()
        best = 0.0
        for rung, value in sorted(source.intermediate_values.items()):
            accuracy, _ = textbook_run(params, source.user_attrs["seed"], rung, train, val)
            loop_epochs += rung
            differences.append(abs(accuracy - value))
            best = max(best, accuracy)
        return best

    start = time.perf_counter()
    plain.optimize(objective, n_trials=len(finished))
    loop_s = time.perf_counter() - start

    print(f"\n{'':<34} {'model-epochs':>12} {'wall s':>8} {'model-epochs/s':>15}")
    print(
        f"{'fashionlab tuner (trunk + forks)':<34} {tuner_epochs:>12} {tuner_s:>8.1f} "
        f"{tuner_epochs / tuner_s:>15.3f}"
    )
    print(
        f"{'Optuna loop, DataLoader, restarts':<34} {loop_epochs:>12} {loop_s:>8.1f} "
        f"{loop_epochs / loop_s:>15.3f}"
    )
    print(f"wall-time ratio (loop / tuner) for the same rung values: {loop_s / tuner_s:.2f}x")
    print(
        f"largest |rung value difference| tuner vs loop: {max(differences):.4f} (other RNG streams)"
    )
    rho = result.best["rank_correlation"]
    print(
        f"\nrank correlation (Spearman) of the {rho['first_rung']}- and {rho['top_rung']}-epoch "
        f"values of the {rho['trials']} trials that reached the top: {rho['spearman']}"
    )
    reference = result.reference
    print(
        f"pick: trial {result.best['number']}, {result.best['epochs']} epochs, validation "
        f"{100 * result.best['val_acc']:.2f}% ({result.best['searched']})"
    )
    print(
        f"reference row: {reference['epochs']} epochs, validation {100 * reference['val_acc']:.2f}%"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
