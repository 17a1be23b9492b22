"""The one place the classifier trains several seeds of one setting (retrains, the ablation)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...population import fit_population, seeded_model
from ...train import FitResult, TrainConfig

__all__ = ["train_seeds"]


def train_seeds(
    model_config: dict[str, Any], train, config: TrainConfig, seeds, *, device="cpu", progress=False
) -> list[tuple[Any, FitResult]]:
    """Train one model of ``model_config`` per seed (initial weights, minibatch order and dropout
    masks from the seed; ``config.seed`` is not used), all as one population
    (:func:`fashionlab.population.fit_population`: on CPU each seed's result is bit for bit its
    own run alone). Returns ``(model, FitResult)`` per seed, in order."""
    configs = [replace(config, seed=seed) for seed in seeds]
    models = [seeded_model(model_config, seed) for seed in seeds]
    results = fit_population(models, train, configs, device=device, progress=progress)
    return list(zip(models, results, strict=True))
