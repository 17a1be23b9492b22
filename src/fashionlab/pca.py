"""Principal components of a set of rows (the landscape's plane, the autoencoder's codes)."""

from __future__ import annotations

import numpy as np

__all__ = ["principal_components"]


def principal_components(rows: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-``k`` principal directions of ``rows`` (N, D), by the SVD of the centred rows.

    Each direction's sign makes its largest-magnitude entry positive (deterministic; callers may
    flip them to their own convention).

    Returns:
        ``(directions (k, D), explained_variance (k,), explained_variance_ratio (k,))`` in float64;
        the variance divides by N - 1, and the ratio is 0 where the rows do not vary at all.
    """
    centred = np.asarray(rows, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    _, singular, vh = np.linalg.svd(centred, full_matrices=False)
    directions = vh[:k].copy()
    largest = np.abs(directions).argmax(axis=1)
    directions *= np.sign(directions[np.arange(len(directions)), largest])[:, None]
    variance = singular**2 / max(1, len(centred) - 1)
    total = variance.sum()
    ratio = variance[:k] / total if total > 0 else np.zeros(len(directions))
    return directions, variance[:k], ratio
