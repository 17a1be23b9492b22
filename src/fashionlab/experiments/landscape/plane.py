"""The plane of the landscape: top-2 PCA directions of a trajectory (Li et al. 2018) and its
grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from ...pca import principal_components
from ...validation import is_int, is_number
from .trajectory import Trajectory, check_trajectory

__all__ = ["PCAPlane", "pca_plane", "grid_axes", "Margin"]


@dataclass(frozen=True, eq=False)
class PCAPlane:
    """Origin ``centre`` (P,), orthonormal ``directions`` (2, P), and the snapshots' coordinates."""

    centre: np.ndarray
    directions: np.ndarray
    explained_variance_ratio: np.ndarray
    explained_variance: np.ndarray
    coords: np.ndarray  # (K, 2) = (theta_i - centre) @ directions.T
    residual: np.ndarray  # (K,) relative distance of theta_i from the plane
    construction: str  # "pca" | "joint-pca"
    description: str


def pca_plane(trajectory: Trajectory) -> PCAPlane:
    """Top-2 PCA directions of the snapshots relative to the final parameters (Li et al. 2018).

    One run: ``PCA(n_components=2)`` on theta_i - theta_final, origin theta_final. Several runs:
    joint PCA of all snapshots relative to the mean c of the final parameters, origin c. Each
    direction's sign is chosen so that the first run's initial snapshot has coordinates >= 0.

    Raises:
        ConfigError: see :func:`check_trajectory`; or all snapshots lie on one line.
    """
    check_trajectory(trajectory)
    thetas = trajectory.params.astype(np.float64)
    runs = trajectory.runs()
    centre = thetas[[trajectory.final_index(r) for r in runs]].mean(axis=0)
    centred = thetas - centre  # (K, P); the PCA subtracts the row mean itself
    directions, variance, ratio = _principal_components_gram(centred, 2)
    if len(ratio) < 2 or not ratio[1] > 1e-12:
        raise ConfigError(
            "the snapshots lie on a line (second principal component has no variance): "
            "record more snapshots or train longer"
        )
    coords = centred @ directions.T
    first = int(np.flatnonzero(trajectory.run == runs[0])[0])
    signs = np.where(coords[first] < 0, -1.0, 1.0)
    directions, coords = directions * signs[:, None], coords * signs
    norms = np.linalg.norm(centred, axis=1)
    off = np.linalg.norm(centred - coords @ directions, axis=1)
    residual = np.divide(off, norms, out=np.zeros_like(norms), where=norms > 0)
    if len(runs) == 1:
        construction, text = (
            "pca",
            "plane: top-2 PCA directions of θ_i − θ_final (one run); origin = final model",
        )
    else:
        construction = "joint-pca"
        text = (
            f"plane: joint PCA of all snapshots of {len(runs)} runs (θ_i − c, c = mean of the "
            f"{len(runs)} final models); origin c is no run's endpoint"
        )
    return PCAPlane(centre, directions, ratio, variance, coords, residual, construction, text)


Margin = float | tuple[float, float, float, float]


def _principal_components_gram(
    rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fashionlab.pca.principal_components` through the (N, N) Gram matrix: for N << D
    (a few hundred snapshots of tens of thousands of parameters) an N x N eigenproblem replaces a
    thin SVD of the N x D matrix; the same directions, variances and signs. Falls back to the SVD
    when N >= D."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.shape[0] >= rows.shape[1]:
        return principal_components(rows, k)
    centred = rows - rows.mean(axis=0)
    eigenvalues, vectors = np.linalg.eigh(centred @ centred.T)  # ascending
    eigenvalues = np.clip(eigenvalues[::-1], 0.0, None)
    vectors = vectors[:, ::-1]
    top = eigenvalues[:k]
    keep = top > 0
    directions = np.zeros((len(top), rows.shape[1]))
    directions[keep] = (vectors[:, :k][:, keep].T @ centred) / np.sqrt(top[keep])[:, None]
    largest = np.abs(directions).argmax(axis=1)
    signs = np.sign(directions[np.arange(len(directions)), largest])
    directions *= np.where(signs == 0, 1.0, signs)[:, None]
    variance = top / max(1, len(centred) - 1)
    total = eigenvalues.sum()
    ratio = top / total if total > 0 else np.zeros(len(top))
    return directions, variance, ratio


def grid_axes(
    coords: np.ndarray, resolution: int = 31, margin: Margin = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates (a, b) covering the projected path and the origin, widened by ``margin``.

    ``margin`` is a fraction of the path's extent on each axis (0.25 = a quarter on each side), or
    four such fractions: (low a, high a, low b, high b).
    """
    if not is_int(resolution) or not 2 <= resolution <= 1001:
        raise ConfigError(
            "resolution must be an integer between 2 and 1001 grid points per axis, got "
            f"{resolution!r}"
        )
    sides = tuple(margin) if isinstance(margin, (tuple, list)) else (margin,) * 4
    if len(sides) != 4 or not all(is_number(m, finite=True) and m >= 0 for m in sides):
        raise ConfigError(
            f"margin must be a number >= 0 (fraction of the path's extent) or four of them "
            f"(low a, high a, low b, high b), got {margin!r}"
        )
    low, high = np.minimum(coords.min(axis=0), 0.0), np.maximum(coords.max(axis=0), 0.0)
    span = np.where(high > low, high - low, 1.0)
    low = low - np.array([sides[0], sides[2]]) * span
    high = high + np.array([sides[1], sides[3]]) * span
    return np.linspace(low[0], high[0], resolution), np.linspace(low[1], high[1], resolution)
