"""Settings of the autoencoder experiment (the assignment's defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ...canonical import Canonical
from ...errors import ConfigError
from ...validation import ALL, check_count, check_int, check_parallel, check_seed, is_int, is_number

__all__ = ["AutoencoderConfig", "LOADERS"]

LOADERS = ("torchvision", "fast")


@dataclass(frozen=True)
class AutoencoderConfig(Canonical):
    """Settings of the autoencoder stage (defaults: the assignment's).

    ``train_size``: a stratified subset of the training images (None = all 60,000).
    ``loader``: "torchvision" (the assignment's ``FashionMNIST`` + ``ToTensor()`` +
    ``DataLoader``, fetching a batch per step) or "fast" (the in-memory ``FastLoader``); the same
    tensors.
    ``images``: the two test-set indices shown in the reconstruction figure (None = the first
    test image and the next one of another class). ``latent_points``: test codes on the map
    (None = all for PCA, 3,000 for t-SNE). ``probe_train_size``: training images the linear
    probes are fit on (None = all 60,000; the cost of a probe's fit grows with the images).
    """

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    train_size: int | None = field(default=None, metadata=ALL)
    loader: Literal["torchvision", "fast"] = "torchvision"
    num_workers: int = 0
    images: tuple[int, int] | None = None
    latent_map: Literal["pca", "tsne"] = "pca"
    latent_points: int | None = None
    probe_train_size: int | None = field(default=10_000, metadata=ALL)
    probe_max_iter: int = 1000

    def __post_init__(self) -> None:
        def integer(name: str, low: int, optional: bool = False) -> None:
            option = f"AutoencoderConfig.{name} (--{name.replace('_', '-')})"
            check_int(option, getattr(self, name), low, optional=optional)

        integer("epochs", 1)
        if not (is_number(self.lr, finite=True) and self.lr > 0):
            raise ConfigError(
                f"AutoencoderConfig.lr (--lr, the Adam learning rate) must be a finite number > 0, "
                f"got {self.lr!r}; the assignment uses 1e-3"
            )
        integer("batch_size", 1)
        check_seed("AutoencoderConfig.seed", self.seed)
        check_count("train_size", self.train_size, 100)
        check_parallel("AutoencoderConfig.num_workers", self.num_workers, 0)
        integer("latent_points", 10, optional=True)
        check_count("probe_train_size", self.probe_train_size, 100)
        integer("probe_max_iter", 1)
        if self.train_size is not None and self.batch_size > self.train_size:
            raise ConfigError(
                f"batch size {self.batch_size} exceeds train_size {self.train_size}; "
                f"lower --batch-size or raise the training subset"
            )
        if self.loader not in LOADERS:
            raise ConfigError(
                f"AutoencoderConfig.loader (--loader) must be 'torchvision' or "
                f"'fast', got {self.loader!r}"
            )
        if self.latent_map not in ("pca", "tsne"):
            raise ConfigError(f"latent map must be 'pca' or 'tsne', got {self.latent_map!r}")
        if self.images is not None:
            images = tuple(self.images)
            if (
                len(images) != 2
                or any(not is_int(i) or i < 0 for i in images)
                or images[0] == images[1]
            ):
                raise ConfigError(
                    "images must be two different non-negative test-set indices, got "
                    f"{self.images!r}; e.g. --images 0 1"
                )
            object.__setattr__(self, "images", images)

    @classmethod
    def quick(cls, **overrides: Any) -> AutoencoderConfig:
        """A smoke-test setting: 2 epochs on 5,000 images, small probes."""
        settings: dict[str, Any] = {
            "epochs": 2,
            "train_size": 5000,
            "probe_train_size": 2000,
            "probe_max_iter": 100,
        }
        settings.update(overrides)
        return cls.from_dict(settings)
