"""The setting ``fashionlab train`` trains when its options give none: the plain recipe.

It is the plain space's reference row (:data:`~.space.REFERENCE`, a person's recipe that the study
must beat) with the WSD schedule; its fields are the command's options, and ``--help`` shows
their defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...models import model_from_name, model_name
from ...validation import ALL
from .space import REFERENCE, TRAIN_KEYS

__all__ = ["PlainRecipe"]

_PLAIN = REFERENCE["plain"]


@dataclass(frozen=True)
class PlainRecipe:
    """One MLP setting trained on the training images (see :func:`~.stage.run_classifier`).

    Args:
        model: registry name ``mlp_<layers>x<units>[_bn][_do<p>][_<activation>]``.
        epochs: training epochs.
        batch_size: minibatch size.
        lr: SGD learning rate.
        momentum: SGD momentum (0: plain SGD).
        nesterov: Nesterov momentum.
        l2: L2 strength on the weight matrices.
        schedule: the learning-rate schedule (``wsd``: constant, then linear to 0 over the last
            ``TrainConfig.decay`` of the epochs; ``cosine``; ``constant``).
        max_train: train on a stratified subset of this many images (None: all of them).

    The values are checked where they are used (:class:`~fashionlab.models.MLP`,
    :class:`~fashionlab.train.TrainConfig`, :class:`~.config.ClassifierConfig`), with the same
    messages as every other command's.
    """

    model: str = model_name(_PLAIN)
    epochs: int = 18
    batch_size: int = _PLAIN["batch_size"]
    lr: float = _PLAIN["lr"]
    momentum: float = _PLAIN["momentum"]
    nesterov: bool = False
    l2: float = _PLAIN["l2"]
    schedule: str = "wsd"
    max_train: int | None = field(default=None, metadata=ALL)

    def params(self) -> dict[str, Any]:
        """The flat setting (best.json's ``params`` form): the model's keys and the training keys.

        Raises:
            ConfigError: the model name does not parse, or an impossible model setting.
        """
        model = model_from_name(self.model)
        keys = ("hidden_layers", "units", "activation", "batchnorm", "dropout")
        train = {key: getattr(self, key) for key in TRAIN_KEYS if hasattr(self, key)}
        return {key: model.config[key] for key in keys} | train
