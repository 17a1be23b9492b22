"""Problem 4: the dense autoencoder 784-128-64-128-784, trained with Adam on the MSE.

``config`` (settings) -> ``data`` (torchvision's DataLoader or FastLoader) -> ``train`` (the
project's one loop with ``nn.MSELoss`` and ``torch.optim.Adam``) -> ``analysis`` (figures, latent
map, probes) -> ``stage`` (:func:`run_autoencoder`, the stage directory). The model itself,
:class:`~fashionlab.models.Autoencoder`, is a core model.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "config": ("AutoencoderConfig", "LOADERS"),
        "data": ("BatchedFashionMNIST", "make_loaders", "textbook_loader", "torchvision_loader"),
        "train": (
            "AutoencoderFit",
            "AutoencoderHistory",
            "encode_split",
            "reconstruction_errors",
            "train_autoencoder",
        ),
        "stage": ("AutoencoderRun", "load_autoencoder", "run_autoencoder"),
    },
)
