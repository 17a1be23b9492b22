"""The course's ``fashion_mnist_{train,test}_{images,labels}.npy`` files, read as IDX content.

The assignment links four NumPy arrays instead of the IDX files: images as uint8, or as floats
``x / 255`` in [0, 1], shaped (N, 784) or (N, 28, 28); labels as integers (N,). Scaled back to
uint8 and encoded as IDX (header + bytes), they must be the canonical content: the same sha256
that every other source is checked against. A leaf module: ``fashionlab.data`` passes in what
a file must be.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["COURSE_NAMES", "npy_idx_bytes"]

COURSE_NAMES = {  # the IDX file -> the course's .npy file with the same content
    "train-images-idx3-ubyte": "fashion_mnist_train_images.npy",
    "train-labels-idx1-ubyte": "fashion_mnist_train_labels.npy",
    "t10k-images-idx3-ubyte": "fashion_mnist_test_images.npy",
    "t10k-labels-idx1-ubyte": "fashion_mnist_test_labels.npy",
}
_IMAGES_MAGIC = 2051

_FIX = (
    "download the course's files again, or use the canonical IDX files "
    "(`fashionlab data download` or `apt-get install dataset-fashion-mnist`)"
)

# float pixels must be k / 255 up to float rounding: within this many gray levels of an integer
_GRAY_TOLERANCE = 0.25


def _load(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc})", fix=_FIX) from exc
    except ValueError as exc:  # not a .npy file, a pickled object array, a truncated file
        raise DataError(f"{path} is not a NumPy array file ({exc})", fix=_FIX) from exc
    if not isinstance(array, np.ndarray):
        raise DataError(
            f"{path} holds several arrays (an .npz archive); expected one array", fix=_FIX
        )
    return array


def _levels(array: np.ndarray, path: Path, what: str, top: int, scale: float) -> np.ndarray:
    """Integers 0..top from an integer array, or from floats ``k / scale``; else a DataError."""
    if array.dtype.kind in "ui":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > top:
            raise DataError(
                f"{path}: {what} range from {low} to {high} (expected 0..{top})", fix=_FIX
            )
        return array.astype(np.uint8)
    if array.dtype.kind != "f":
        raise DataError(
            f"{path}: dtype {array.dtype} (expected {what} as integers"
            f"{' or floats in [0, 1]' if scale != 1 else ''})",
            fix=_FIX,
        )
    if not np.isfinite(array).all():
        raise DataError(f"{path}: {what} include NaN or infinity", fix=_FIX)
    scaled = array.astype(np.float64) * scale
    levels = np.rint(scaled)
    low, high = float(array.min(initial=0)), float(array.max(initial=0))
    if levels.min(initial=0) < 0 or levels.max(initial=0) > top:
        expected = "[0, 1]" if scale != 1 else f"0..{top}"
        raise DataError(
            f"{path}: {what} range from {low:g} to {high:g} (expected {expected})", fix=_FIX
        )
    deviation = float(np.abs(scaled - levels).max(initial=0))
    if deviation > _GRAY_TOLERANCE:
        step = "multiples of 1/255 (x / 255 of 8-bit pixels)" if scale != 1 else "whole numbers"
        raise DataError(
            f"{path}: {what} are not {step}: off by up to {deviation:.3f} of a step", fix=_FIX
        )
    return levels.astype(np.uint8)


def npy_idx_bytes(path: Path, magic: int, shape: tuple[int, ...], sha256: str) -> bytes:
    """The IDX bytes (header + uint8 data) of the course's array in ``path``, checked.

    Args:
        path: a ``.npy`` file of :data:`COURSE_NAMES`.
        magic: 2051 (images) or 2049 (labels), of the IDX file it stands for.
        shape: that file's shape, e.g. (60000, 28, 28) or (60000,).
        sha256: the canonical sha256 of that file's decompressed content.

    Raises:
        DataError: naming ``path``: not one array, a shape, dtype or value range that is not
            the data's, or content that differs from the canonical file.
    """
    array = _load(path)
    images = magic == _IMAGES_MAGIC
    n = shape[0]
    accepted = [shape, (n, int(np.prod(shape[1:])))] if images else [shape, (n, 1)]
    if array.shape not in accepted:
        shown = " or ".join(str(s) for s in accepted)
        raise DataError(f"{path}: shape {array.shape} (expected {shown})", fix=_FIX)
    what = "pixel values" if images else "labels"
    content = _levels(array, path, what, 255 if images else 9, 255.0 if images else 1.0)
    raw = struct.pack(f">I{len(shape)}I", magic, *shape) + content.reshape(shape).tobytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        kind = (
            "the images differ (after scaling to 0..255 and reshaping to (N, 28, 28))"
            if images
            else "the labels differ"
        )
        raise DataError(
            f"{path}: {kind} from the canonical Fashion-MNIST: a changed value, "
            f"another order or another dataset (sha256 of the content as IDX "
            f"{digest[:16]}…, expected {sha256[:16]}…)",
            fix=_FIX,
        )
    return raw
