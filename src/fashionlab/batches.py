"""The examples in memory: a split as two compact tensors, stratified sub-splits, and minibatches.

No file is read here (that is :mod:`fashionlab.data`): a :class:`Split` holds uint8 images and
int64 labels, and :class:`FastLoader` serves float batches from them by shuffled index.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["Split", "stratified_split", "FastLoader"]


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) int64, kept as compact tensors."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.shape[1:] == (28, 28)
        assert self.labels.shape == (self.images.shape[0],)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> Split:
        """The examples at ``index`` (a 1-D index tensor)."""
        return Split(self.images[index], self.labels[index])

    def subset(self, n: int, seed: int = 0) -> Split:
        """A stratified, seeded subset of ``n`` examples (all of them if ``n >= len``)."""
        if n >= len(self):
            return self
        keep, _ = stratified_split(self.labels, len(self) - n, seed)
        return self.take(keep)

    def tensors(
        self, device: str | torch.device = "cpu", flatten: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All examples as ``(x, y)``: x float32 = images/255, (N, 784) or (N, 1, 28, 28)."""
        x = self.images.to(device).to(torch.float32).div_(255)
        x = x.reshape(len(self), 784) if flatten else x.unsqueeze(1)
        return x, self.labels.to(device)


def stratified_split(
    labels: torch.Tensor, val_size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified split: returns sorted (train_index, val_index) with ``val_size`` in val.

    Each class gets ``val_size * share`` validation examples (largest remainders get the
    rounding), drawn by a permutation from a generator seeded with ``seed``.
    """
    n = int(labels.shape[0])
    if not 0 < val_size < n:
        from .errors import ConfigError

        raise ConfigError(f"validation size must be between 1 and {n - 1}, got {val_size}")
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts.double() * val_size / n
    take = quota.floor().long()
    remainder = val_size - int(take.sum())
    take[torch.argsort(quota - take.double(), descending=True, stable=True)[:remainder]] += 1
    generator = torch.Generator().manual_seed(seed)
    val_parts = []
    for cls, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        val_parts.append(members[torch.randperm(len(members), generator=generator)[:k]])
    val_index = torch.sort(torch.cat(val_parts)).values
    mask = torch.ones(n, dtype=torch.bool)
    mask[val_index] = False
    return torch.nonzero(mask).flatten(), val_index


class FastLoader:
    """Minibatches ``(x, y)`` from uint8 tensors kept on the device, by shuffled index.

    ``x = images[idx].float() / 255`` is bit-identical to ``ToTensor()``; there is no
    per-sample Python and no PIL. Each ``iter()`` draws a new permutation from a generator
    seeded once with ``seed``, so epoch k of two loaders with the same seed match.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        flatten: bool = True,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            from .errors import ConfigError

            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self._flat_images = self.images.reshape(-1, 784)  # (N, 784), a view of the images
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.flatten = flatten
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = int(self.labels.shape[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_order(self) -> torch.Tensor:
        """The example order of the next epoch, on the loader's device: a new permutation from
        the loader's generator when shuffling, ``arange`` otherwise. ``iter()`` serves its batches
        in this order; callers that gather batches themselves (several seeds at once) use it."""
        n = int(self.labels.shape[0])
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        return order.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # index_select on the flat view: half the per-batch cost of images[index] (fewer ops).
        for index in self.epoch_order().split(self.batch_size)[: len(self)]:
            x = self._flat_images.index_select(0, index).to(torch.float32).div_(255)  # (B, 784)
            yield (x if self.flatten else x.view(-1, 1, 28, 28)), self.labels.index_select(0, index)
