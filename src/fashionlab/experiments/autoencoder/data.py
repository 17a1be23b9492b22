"""The autoencoder's data: torchvision's ``FashionMNIST`` + ``ToTensor()`` + ``DataLoader``.

The assignment's API, made as fast as the in-memory path. The textbook loop spends its time per
sample: ``FashionMNIST.__getitem__`` makes a PIL image of every example, ``ToTensor()`` converts
it back (two thirds of the time), and ``default_collate`` stacks 32 single tensors per batch.
:class:`BatchedFashionMNIST` applies ``ToTensor()`` once to the whole split and is indexed by a
list of indices; a ``BatchSampler`` given to the ``DataLoader`` as its ``sampler``
(``batch_size=None``) then fetches a batch with one indexing operation.

Three paths give the same tensors for the same examples, bit for bit: :func:`torchvision_loader`
(the default), :func:`textbook_loader` (the per-sample loop, kept as the benchmarks' baseline)
and the core ``FastLoader``. The two DataLoaders also draw the same order from the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, Subset
from torchvision import datasets, transforms

from ...data import FastLoader, Split, stratified_split, torchvision_dataset, torchvision_root
from .config import AutoencoderConfig

__all__ = [
    "Batches",
    "BatchedFashionMNIST",
    "torchvision_loader",
    "textbook_loader",
    "make_loaders",
]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class BatchedFashionMNIST(datasets.FashionMNIST):
    """torchvision's ``FashionMNIST``, its ``transform`` applied once to the whole split.

    torchvision reads the raw IDX files as usual (``data`` uint8 (N, 28, 28), ``targets``
    int64 (N,)). ``transform`` (default ``transforms.ToTensor()``) then receives every image
    at once, as an H x W x N uint8 array: ToTensor reads that as H x W x C and returns the
    (N, 28, 28) floats ``x / 255``, the numbers it gives image by image.

    ``dataset[i]`` is ``(x (1, 28, 28), label)`` as in torchvision; ``dataset[[i, j, ...]]``
    is a whole batch ``(x (B, 1, 28, 28), y (B,))``, which a ``DataLoader`` fetches when its
    ``sampler`` is a ``BatchSampler`` and ``batch_size=None``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        transform: Callable[[np.ndarray], torch.Tensor] | None = None,
        download: bool = False,
    ) -> None:
        transform = transform if transform is not None else transforms.ToTensor()
        super().__init__(str(root), train=train, transform=transform, download=download)
        pixels = transform(self.data.numpy().transpose(1, 2, 0))  # (28, 28, N) -> (N, 28, 28)
        if not (isinstance(pixels, torch.Tensor) and pixels.shape == self.data.shape):
            raise TypeError(
                f"BatchedFashionMNIST needs a transform that maps an H x W x N "
                f"array to an (N, H, W) tensor, as ToTensor() does; "
                f"{transform!r} did not"
            )
        self.pixels = pixels.unsqueeze(1)  # (N, 1, 28, 28)

    @property
    def raw_folder(self) -> str:
        # torchvision names the folder after the class; the files are FashionMNIST's.
        return os.path.join(self.root, datasets.FashionMNIST.__name__, "raw")

    def __getitem__(
        self, index: int | Sequence[int] | torch.Tensor
    ) -> tuple[torch.Tensor, int | torch.Tensor]:
        batch = torch.as_tensor(index, dtype=torch.long)
        if batch.ndim == 0:
            return self.pixels[batch], int(self.targets[batch])
        return self.pixels[batch], self.targets[batch]  # (B, 1, 28, 28), (B,)


def torchvision_loader(
    train: bool,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool | None = None,
    indices: torch.Tensor | None = None,
    num_workers: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> DataLoader:
    """``DataLoader(FashionMNIST(transform=ToTensor()))`` that fetches a batch per step.

    The dataset is a :class:`BatchedFashionMNIST`; the loader's ``sampler`` is a
    ``BatchSampler`` over a seeded ``RandomSampler`` (training) or a ``SequentialSampler``
    (test), with ``batch_size=None``. It draws the same order as :func:`textbook_loader`
    with the same ``seed`` and yields the same batches.

    Args:
        train: the training set (True) or the test set (False).
        batch_size: images per batch (the last one may be smaller).
        seed: seeds the shuffling order (the DataLoader's generator).
        shuffle: default True for the training set, False for the test set.
        indices: keep only these examples (``torch.utils.data.Subset``).
        num_workers: DataLoader worker processes (0: load in the main process).
        data_dir: where the Fashion-MNIST files are (see ``fashionlab.data``).
    """
    # torchvision checks that all four raw files exist, whichever split is asked for.
    dataset = BatchedFashionMNIST(
        torchvision_root(data_dir, "all"), train=train, transform=transforms.ToTensor()
    )
    if indices is not None:
        dataset = Subset(dataset, indices.tolist())  # a list index goes through in one call
    generator = torch.Generator().manual_seed(seed)
    shuffle = train if shuffle is None else shuffle
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        sampler=BatchSampler(order, batch_size, drop_last=False),
        batch_size=None,
        num_workers=num_workers,
        generator=generator,
    )


def textbook_loader(
    train: bool,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool | None = None,
    indices: torch.Tensor | None = None,
    num_workers: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> DataLoader:
    """``DataLoader(FashionMNIST(transform=ToTensor()), batch_size, shuffle)``, per sample.

    The loop as the textbook writes it (a PIL image and a ToTensor call per example, then
    ``default_collate``): the benchmarks' baseline. Arguments as :func:`torchvision_loader`.
    """
    dataset = torchvision_dataset(train=train, data_dir=data_dir)
    if indices is not None:
        dataset = Subset(dataset, indices.tolist())
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train if shuffle is None else shuffle,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def make_loaders(
    config: AutoencoderConfig,
    train: Split,
    test: Split,
    *,
    device: str | torch.device = "cpu",
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[Batches, Batches]:
    """The (train, test) batches of ``config.loader``; the training subset if ``train_size``.

    Both paths use the same stratified seeded subset (``Split.subset(train_size, seed)``).
    The torchvision path serves CPU tensors (the training loop moves them to ``device``).
    """
    if config.loader == "torchvision":
        indices = None
        if config.train_size is not None and config.train_size < len(train):
            indices, _ = stratified_split(train.labels, len(train) - config.train_size, config.seed)
        return (
            torchvision_loader(
                True,
                config.batch_size,
                seed=config.seed,
                indices=indices,
                num_workers=config.num_workers,
                data_dir=data_dir,
            ),
            torchvision_loader(False, 1000, num_workers=config.num_workers, data_dir=data_dir),
        )
    if config.train_size is not None:
        train = train.subset(config.train_size, seed=config.seed)
    return (
        FastLoader(train, config.batch_size, shuffle=True, seed=config.seed, device=device),
        FastLoader(test, 1000, shuffle=False, device=device),
    )
