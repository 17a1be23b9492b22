"""The search spaces of the MLP classifier and the flat settings that describe one model.

A *setting* is one flat dict: the model keys (``hidden_layers``, ``units``, ``activation``,
``batchnorm``, ``dropout``) and the training keys (``epochs``, ``batch_size``, ``lr``,
``momentum``, ``nesterov``, ``l2``, ``schedule``, ``decay``), as best.json ``params`` holds it.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...models import MLP
from ...train import TrainConfig

__all__ = [
    "SPACES",
    "PLAIN_BATCHES",
    "VARIANT_BATCHES",
    "REFERENCE",
    "MODEL_KEYS",
    "searched_keys",
    "TRAIN_KEYS",
    "settings_from_params",
]

SPACES = ("plain", "variant")
PLAIN_BATCHES = (16, 32, 64, 128, 256)
VARIANT_BATCHES = (32, 64, 128, 256)
# The reference row: a person's recipe per space, trained outside the study with the study's own
# protocol (the same split, rungs, WSD schedule and seed; its length is the rung it scores best
# on, on validation), so the report shows whether the search beats a careful hand choice. They
# are the recipes this project used before the search chose its models; not enqueued.
REFERENCE: dict[str, dict[str, Any]] = {
    "plain": {
        "hidden_layers": 3,
        "units": 50,
        "lr": 0.03,
        "batch_size": 64,
        "l2": 1e-3,
        "momentum": 0.9,
    },
    "variant": {
        "hidden_layers": 2,
        "units": 256,
        "activation": "relu",
        "batchnorm": True,
        "dropout": 0.2,
        "lr": 0.05,
        "batch_size": 128,
        "l2": 5e-4,
        "momentum": 0.9,
    },
}
MODEL_KEYS = ("hidden_layers", "units", "activation", "batchnorm", "dropout")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "l2", "schedule", "decay")
_SEARCHED = {
    "plain": ("hidden_layers", "units", "lr", "batch_size", "l2", "momentum"),
    "variant": (
        "hidden_layers",
        "units",
        "activation",
        "batchnorm",
        "dropout",
        "lr",
        "batch_size",
        "l2",
        "momentum",
    ),
}


def searched_keys(space: str) -> tuple[str, ...]:
    """The keys the study of ``space`` samples (what an enqueued setting may fix)."""
    return _SEARCHED[space]


def settings_from_params(
    params: dict[str, Any], seed: int = 0, epochs: int | None = None
) -> tuple[dict[str, Any], Any]:
    """Turn a flat setting (best.json ``params``) into ``(MLP config, TrainConfig)``.

    Missing keys take the defaults of :class:`~fashionlab.models.MLP` and
    :class:`~fashionlab.train.TrainConfig`; ``epochs`` overrides the setting's epochs.

    Raises:
        ConfigError: unknown keys or an impossible value (checked by MLP and TrainConfig).
    """
    unknown = sorted(set(params) - set(MODEL_KEYS) - set(TRAIN_KEYS) - {"seed"})
    if unknown:
        raise ConfigError(
            f"unknown setting keys {unknown}; expected some of {MODEL_KEYS + TRAIN_KEYS}"
        )
    model_config = {k: params[k] for k in MODEL_KEYS if k in params}
    for key in ("hidden_layers", "units"):
        if key not in model_config:
            raise ConfigError(f"the setting {params} lacks {key!r}")
    train_kwargs = {k: params[k] for k in TRAIN_KEYS if k in params}
    if epochs is not None:
        train_kwargs["epochs"] = epochs
    train_config = TrainConfig(seed=seed, **train_kwargs)
    model_config = MLP(**model_config).config  # validates and fills the defaults
    return model_config, train_config
