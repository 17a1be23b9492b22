"""Small synthetic Fashion-MNIST look-alikes written as IDX files, for the fast tier.

Each class is a fixed random blob shape (a garment on a black background, roughly); an image is
its class's shape, shifted by up to a pixel, scaled in brightness and overlaid with noise. An MLP
learns it in an epoch or two but not perfectly, so training tests keep their meaning (losses fall,
accuracy rises above chance) without the 60,000 real images.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashionlab import data

# 250 / 50 per class: the train file holds the tests' 2,000 / 500 train/validation split.
SIZES = {"train": 2500, "test": 500}
VAL_SIZE = 500


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The decompressed IDX encoding of a uint8 array: magic, big-endian dimensions, data."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def _templates(rng: np.random.Generator) -> np.ndarray:
    """One (28, 28) shape per class in [0, 1]: a body all classes share and two random ellipses
    of the class's own, so that classes overlap the way garments do."""
    yy, xx = np.mgrid[0:28, 0:28]

    def ellipse() -> np.ndarray:
        cy, cx = rng.uniform(7, 21, size=2)
        ry, rx = rng.uniform(3, 9, size=2)
        return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(float)

    body = 0.6 * ellipse()
    return np.stack([np.maximum(body, np.maximum(ellipse(), ellipse())) for _ in range(10)])


def images_and_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (n, 28, 28) and balanced labels (n,), shuffled; seeded."""
    shapes = _templates(np.random.default_rng(1234))  # the same classes for every split
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    shifted = np.stack(
        [np.roll(shapes[c], tuple(rng.integers(-3, 4, size=2)), axis=(0, 1)) for c in labels]
    )
    brightness = rng.uniform(100, 255, size=(n, 1, 1))
    noise = rng.normal(0, 80, size=(n, 28, 28))
    images = np.clip(shifted * brightness + noise, 0, 255).astype(np.uint8)
    return images, labels


@dataclass(frozen=True)
class SyntheticData:
    """The four files in ``folder`` (gzipped IDX, the real names) and the specs they match."""

    folder: Path
    specs: dict[str, data.FileSpec]


def write_files(folder: Path) -> SyntheticData:
    """Write the four synthetic IDX files into ``folder``; return it with matching specs."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = {}
    for seed, (split, n) in enumerate(SIZES.items()):
        images, labels = images_and_labels(n, seed)
        for kind, array in (("images", images), ("labels", labels)):
            real = data.FILES[f"{split}-{kind}"]
            raw = idx_bytes(array, real.magic)
            (folder / f"{real.name}.gz").write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
            specs[f"{split}-{kind}"] = data.FileSpec(
                real.name, real.magic, array.shape, hashlib.sha256(raw).hexdigest()
            )
    return SyntheticData(folder, specs)


def read_split(synthetic: SyntheticData, split: str) -> data.Split:
    """The synthetic ``split`` read back through the IDX parser (magic, dims, sha256 checked)."""
    arrays = []
    for kind in ("images", "labels"):
        spec = synthetic.specs[f"{split}-{kind}"]
        path = synthetic.folder / f"{spec.name}.gz"
        arrays.append(data.parse_idx(data.file_content(path, spec), spec, path))
    images, labels = arrays
    return data.Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
