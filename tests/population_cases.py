"""What the population tests share: a training config, a plain model, four settings that can
stack, and comparisons of state dicts."""

from __future__ import annotations

from dataclasses import replace

import torch

from fashionlab.train import TrainConfig

# 2 epochs of 63 steps on the 2,000 tiny training images
CONFIG = TrainConfig(
    epochs=2, batch_size=32, lr=0.05, momentum=0.9, l2=1e-3, schedule="wsd", seed=5
)
PLAIN = {"hidden_layers": 3, "units": 30}


def equal_states(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def max_difference(first: dict, second: dict) -> float:
    return max(float((first[k].double() - second[k].double()).abs().max()) for k in first)


def members():
    """Four settings that share depth and batch size: widths, lr, momentum, L2, schedule,
    length, dropout and seed all differ."""
    model_configs = [
        {"hidden_layers": 2, "units": 30},
        {"hidden_layers": 2, "units": [50, 20]},
        {"hidden_layers": 2, "units": 40, "dropout": 0.2},
        {"hidden_layers": 2, "units": 24},
    ]
    configs = [
        replace(CONFIG, seed=1),
        replace(CONFIG, seed=2, lr=0.1, momentum=0.0, l2=0.0, schedule="constant"),
        replace(CONFIG, seed=3, lr=0.02, nesterov=True, epochs=3, schedule="cosine"),
        replace(CONFIG, seed=4, lr=0.03, l2=1e-2, epochs=1),
    ]
    return model_configs, configs
