"""The autoencoder's two data paths: the in-memory FastLoader and torchvision's DataLoader.

They serve bit-identical tensors; with the same seed the initial weights are identical, but the
shuffling orders differ (the DataLoader draws its own permutation).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from ...data import FastLoader, Split, stratified_split, torchvision_dataset
from .config import AutoencoderConfig

__all__ = ["Batches", "textbook_loader", "make_loaders"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def textbook_loader(train: bool, batch_size: int, *, seed: int = 0, shuffle: bool | None = None,
                    indices: torch.Tensor | None = None, num_workers: int = 0,
                    data_dir: str | os.PathLike[str] | None = None) -> torch.utils.data.DataLoader:
    """``DataLoader(torchvision FashionMNIST with ToTensor())``: the textbook data path.

    Args:
        train: the training set (True) or the test set (False).
        batch_size: images per batch.
        seed: seeds the DataLoader's generator (its shuffling order).
        shuffle: default True for the training set, False for the test set.
        indices: keep only these examples (``torch.utils.data.Subset``).
        num_workers: DataLoader worker processes (0: load in the main process).
        data_dir: where the Fashion-MNIST files are (see ``fashionlab.data``).
    """
    from torch.utils.data import DataLoader, Subset

    dataset = torchvision_dataset(train=train, data_dir=data_dir)
    if indices is not None:
        dataset = Subset(dataset, indices.tolist())
    return DataLoader(dataset, batch_size=batch_size, shuffle=train if shuffle is None else shuffle,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def make_loaders(config: AutoencoderConfig, train: Split, test: Split, *, device: str | torch.device = "cpu",
                 data_dir: str | os.PathLike[str] | None = None) -> tuple[Batches, Batches]:
    """The (train, test) batch iterables of ``config.loader``; the training subset if ``train_size``.

    Both paths use the same stratified seeded subset (``Split.subset(train_size, seed)``).
    """
    if config.loader == "textbook":
        indices = None
        if config.train_size is not None and config.train_size < len(train):
            indices, _ = stratified_split(train.labels, len(train) - config.train_size, config.seed)
        return (textbook_loader(True, config.batch_size, seed=config.seed, indices=indices,
                                num_workers=config.num_workers, data_dir=data_dir),
                textbook_loader(False, 1000, num_workers=config.num_workers, data_dir=data_dir))
    if config.train_size is not None:
        train = train.subset(config.train_size, seed=config.seed)
    return (FastLoader(train, config.batch_size, shuffle=True, seed=config.seed, device=device),
            FastLoader(test, 1000, shuffle=False, device=device))
