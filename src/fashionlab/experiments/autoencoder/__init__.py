"""Problem 4: the dense autoencoder 784-128-64-128-784, trained with Adam on the MSE.

``config`` (settings) -> ``data`` (FastLoader or torchvision's DataLoader) -> ``train`` (the
project's one loop with ``nn.MSELoss`` and ``torch.optim.Adam``) -> ``analysis`` (figures, latent
map, probes) -> ``stage`` (:func:`run_autoencoder`, the stage directory). The model itself,
:class:`~fashionlab.models.Autoencoder`, is a core model.
"""

from __future__ import annotations

from ...models import Autoencoder, build_autoencoder
from .config import AutoencoderConfig
from .data import make_loaders, textbook_loader
from .stage import AutoencoderRun, load_autoencoder, run_autoencoder
from .train import (
    AutoencoderFit,
    AutoencoderHistory,
    encode_split,
    reconstruction_errors,
    train_autoencoder,
)

__all__ = [
    "Autoencoder", "AutoencoderConfig", "AutoencoderHistory", "AutoencoderFit", "AutoencoderRun",
    "build_autoencoder", "load_autoencoder", "make_loaders", "textbook_loader", "train_autoencoder",
    "reconstruction_errors", "encode_split", "run_autoencoder",
]
