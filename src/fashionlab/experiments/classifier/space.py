"""The search spaces of the MLP classifier and the flat settings that describe one model.

A *setting* is one flat dict: the model keys (``hidden_layers``, ``units``, ``activation``,
``batchnorm``, ``dropout``) and the training keys (``epochs``, ``batch_size``, ``lr``,
``momentum``, ``nesterov``, ``l2``, ``schedule``, ``decay``), as best.json ``params`` holds it.

The learning rate is searched as the *effective* rate ``effective_lr = lr / (1 - momentum)``
(the step SGD with heavy-ball momentum takes in the steady state), and ``lr`` follows from it and
the sampled momentum (:func:`setting_from_searched`). With ``lr`` and ``momentum`` drawn
independently, the same ``lr`` is a ten times longer step with momentum 0.9 than without, so the
space held a region of dead nets (momentum 0.9 and a large ``lr``) and one of nets that barely
move (no momentum and a small ``lr``); the effective rate's range leaves both out. Why these
ranges: benchmarks/README.md ("The effective learning rate").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...models import MLP
from ...train import TrainConfig
from ...validation import is_int, is_number

__all__ = [
    "SPACES",
    "PLAIN_BATCHES",
    "VARIANT_BATCHES",
    "REFERENCE",
    "MODEL_KEYS",
    "searched_keys",
    "setting_from_searched",
    "searched_from_setting",
    "FloatRange",
    "search_space",
    "check_setting",
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
    "plain": ("hidden_layers", "units", "effective_lr", "batch_size", "l2", "momentum"),
    "variant": (
        "hidden_layers",
        "units",
        "activation",
        "batchnorm",
        "dropout",
        "effective_lr",
        "batch_size",
        "l2",
        "momentum",
    ),
}


def searched_keys(space: str) -> tuple[str, ...]:
    """The keys the study of ``space`` samples (what an enqueued setting may fix)."""
    return _SEARCHED[space]


@dataclass(frozen=True)
class FloatRange:
    """A searched number in ``[low, high]``: log-uniform, or on a grid of ``step``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


# The effective rate lr / (1 - momentum): BatchNorm keeps the variant's wide nets trainable at
# rates that kill a plain net (benchmarks/README.md, "The effective learning rate").
_EFFECTIVE_LR = {
    "plain": FloatRange(0.01, 0.5, log=True),
    "variant": FloatRange(0.01, 3.0, log=True),
}
_DISTRIBUTIONS: dict[str, dict[str, tuple[Any, ...] | FloatRange]] = {
    "plain": {"hidden_layers": (3, 4, 5), "units": (30, 40, 50)},
    "variant": {
        "hidden_layers": (2, 3),
        "units": (128, 256, 512),
        "activation": ("relu", "leaky_relu", "elu", "prelu"),
        "batchnorm": (False, True),
        "dropout": FloatRange(0.0, 0.5, step=0.05),  # a grid: short model names
    },
}


def search_space(space: str) -> dict[str, tuple[Any, ...] | FloatRange]:
    """What the study of ``space`` samples, in the order it samples it: for each searched key its
    choices (a tuple) or its :class:`FloatRange`."""
    batches = PLAIN_BATCHES if space == "plain" else VARIANT_BATCHES
    shared = {
        "effective_lr": _EFFECTIVE_LR[space],
        "batch_size": batches,
        "l2": FloatRange(1e-6, 1e-2, log=True),
        "momentum": (0.0, 0.9),
    }
    return {**_DISTRIBUTIONS[space], **shared}


def setting_from_searched(searched: dict[str, Any]) -> dict[str, Any]:
    """The training keys of a searched setting: ``effective_lr`` becomes
    ``lr = effective_lr * (1 - momentum)``; a setting without ``effective_lr`` (a study made
    before the effective rate was searched) is returned as it is."""
    setting = dict(searched)
    if "effective_lr" in setting:
        effective = setting.pop("effective_lr")
        setting["lr"] = effective * (1.0 - setting.get("momentum", 0.0))
    return setting


def searched_from_setting(setting: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`setting_from_searched` for a setting to enqueue: ``lr`` and
    ``momentum`` become ``effective_lr = lr / (1 - momentum)`` and ``momentum``.

    Raises:
        ConfigError: ``lr`` without ``momentum`` (the effective rate needs both), or with
            ``effective_lr`` too.
    """
    searched = dict(setting)
    if "lr" not in searched:
        return searched
    if "effective_lr" in searched or "momentum" not in searched:
        raise ConfigError(
            f"enqueued setting {setting}: the study searches effective_lr = lr / (1 - momentum); "
            "give lr with its momentum, or effective_lr"
        )
    lr, momentum = searched.pop("lr"), searched["momentum"]
    if not (is_number(lr, finite=True) and is_number(momentum, finite=True) and momentum < 1):
        raise ConfigError(
            f"enqueued setting {setting}: lr and momentum must be numbers, momentum below 1"
        )
    searched["effective_lr"] = lr / (1.0 - momentum)
    return searched


def check_setting(setting: dict[str, Any], space: str) -> None:
    """Refuse a setting (an enqueued one) with a key the space does not search or a value outside
    the space: a number outside its range (nan and inf included), or not one of the choices.

    Raises:
        ConfigError: naming the key, the value and what the space allows.
    """
    distributions = search_space(space)
    unknown = sorted(set(setting) - set(distributions))
    if unknown:
        raise ConfigError(
            f"enqueued setting {setting} has keys {unknown} that the {space} space does not "
            f"search; use some of {list(distributions)}"
        )
    for key, value in setting.items():
        allowed = distributions[key]
        if isinstance(allowed, FloatRange):
            if not (is_number(value, finite=True) and allowed.low <= value <= allowed.high):
                raise ConfigError(
                    f"enqueued setting {setting}: {key} must be a number from {allowed.low:g} to "
                    f"{allowed.high:g} (the {space} space's range), got {value!r}"
                )
        elif not any(value == c and type(value) is type(c) for c in allowed):
            if is_int(value) and float(value) in allowed:
                continue  # momentum = 0 for 0.0
            raise ConfigError(
                f"enqueued setting {setting}: {key} must be one of {list(allowed)} (the {space} "
                f"space's choices), got {value!r}"
            )


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
