"""A short ablation for the variant: the plain pick with BatchNorm only, or Dropout only.

The variant is both regularised differently and wider than the plain model; to see what
BatchNorm and Dropout do *alone*, the plain pick (its depth, width, optimiser settings and
length) is trained again with BatchNorm added, and with Dropout ``p`` added, and scored on the
validation split like the study's trials (the same 50,000 / 10,000 split, the same WSD run of
the pick's length), one run per seed. Given the study's own run of the pick (``study``: its
seed and value), the arms train with that seed and the plain arm *is* that run (a rung value is
exactly a finished run of its length, ``rungs``), so it is read, not trained again. Nothing here
is chosen from it; it is reported.
File format: ``docs/run-directory.md`` (``classifier/ablation.json``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ...atomic import atomic_write_json
from ...data import load_train_val
from ...threads import torch_threads
from ...train import evaluate
from .seeds import train_seeds
from .space import REFERENCE, settings_from_params

__all__ = ["ARMS", "run_ablation"]

DROPOUT = REFERENCE["variant"]["dropout"]  # the reference variant's dropout
ARMS = {
    "plain": {},
    "batchnorm": {"batchnorm": True},
    "dropout": {"dropout": DROPOUT},
}


def run_ablation(
    out_dir: str | os.PathLike[str],
    params: dict[str, Any],
    *,
    seeds: tuple[int, ...] = (0,),
    val_size: int = 10_000,
    split_seed: int = 0,
    max_train: int | None = None,
    device: str = "cpu",
    threads: int | None = 1,
    data_dir=None,
    study: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the plain setting ``params`` as it is, with BatchNorm, and with Dropout; write and
    return ablation.json's dict (validation accuracy per arm and seed, and their means).

    ``study``: the best.json of the study that picked ``params``; then the split, the training
    subset and the seed are the study's (whatever ``params``' length), and the plain arm is the
    study's value when it is exactly the study's run (:func:`_is_the_study_s_run`).
    """
    known = None
    if study is not None:
        tuned = study["config"]
        val_size, split_seed, max_train = tuned["val_size"], tuned["seed"], tuned["max_train"]
        seeds = (study["seed"],)
    train, val = load_train_val(val_size, seed=split_seed, data_dir=data_dir)
    if max_train is not None:
        train = train.subset(max_train, seed=split_seed)
    if study is not None and _is_the_study_s_run(study, params, train, val, device, threads):
        known = study["val_acc"]
    arms = {}
    start = time.perf_counter()
    with torch_threads(threads):
        for name, change in ARMS.items():
            if not change and known is not None:
                arms[name] = {
                    "change": change,
                    "val_accuracies": [known],
                    "val_accuracy": known,
                    "diverged": False,
                    "from_study": True,
                }
                continue
            model_config, train_config = settings_from_params(params | change, seed=seeds[0])
            runs = train_seeds(model_config, train, train_config, seeds, device=device)
            accuracies = [evaluate(model, val, device)[1] for model, _ in runs]
            arms[name] = {
                "change": change,
                "val_accuracies": accuracies,
                "val_accuracy": sum(accuracies) / len(accuracies),
                "diverged": any(run.diverged for _, run in runs),
                "from_study": False,
            }
    ablation = {
        "schema_version": 1,
        "params": params,
        "epochs": params["epochs"],
        "seeds": list(seeds),
        "train_examples": len(train),
        "val_examples": len(val),
        "arms": arms,
        "seconds": time.perf_counter() - start,
    }
    atomic_write_json(Path(out_dir) / "ablation.json", ablation)
    return ablation


def _is_the_study_s_run(
    study: dict[str, Any], params: dict[str, Any], train, val, device: str, threads: int | None
) -> bool:
    """Whether training ``params`` here repeats the study's run of its pick exactly: the same
    setting and length, the same examples, device and threads (other threads may sum in
    another order)."""
    tuned = study["config"]
    return (
        study.get("params") == params
        and study.get("epochs") == params.get("epochs")
        and study.get("train_examples") == len(train)
        and study.get("val_examples") == len(val)
        and tuned.get("device") == device
        and tuned.get("threads") == threads
    )
