"""Is a run's final model in a basin of the drawn surface? The minimum of the surface near it (by
steepest descent on the grid from the grid point nearest its projection), whether that minimum is
interior, and the criterion: the final model's loss at most ``tol`` x (the surface's loss range)
above that minimum, both its own loss and the surface's height at its projection."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["basin_minimum", "basin_check", "edges_touched"]


def basin_minimum(
    loss: np.ndarray, a: np.ndarray, b: np.ndarray, point: np.ndarray
) -> tuple[int, int]:
    """Grid index (k, j) of the local minimum reached by steepest descent over the 8 neighbours
    from the grid point nearest ``point`` = (a, b); ``loss[k, j]`` is at ``(a[j], b[k])``."""
    k, j = int(np.abs(b - point[1]).argmin()), int(np.abs(a - point[0]).argmin())
    while True:
        window = loss[max(k - 1, 0) : k + 2, max(j - 1, 0) : j + 2]
        dk, dj = np.unravel_index(np.nanargmin(window), window.shape)
        nk, nj = max(k - 1, 0) + int(dk), max(j - 1, 0) + int(dj)
        if not loss[nk, nj] < loss[k, j]:
            return k, j
        k, j = nk, nj


def edges_touched(index: tuple[int, int], shape: tuple[int, int]) -> list[int]:
    """The grid sides a grid point lies on: 0 low a, 1 high a, 2 low b, 3 high b."""
    k, j = index
    touched = []
    if j == 0:
        touched.append(0)
    if j == shape[1] - 1:
        touched.append(1)
    if k == 0:
        touched.append(2)
    if k == shape[0] - 1:
        touched.append(3)
    return touched


def basin_check(
    loss: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    point: np.ndarray,
    final_loss: float,
    plane_loss: float,
    tol: float = 0.02,
) -> dict[str, Any]:
    """The basin criterion for one final model (module docstring) as a JSON-ready dict."""
    k, j = basin_minimum(loss, a, b, point)
    surface_range = float(np.nanmax(loss) - np.nanmin(loss))
    minimum = float(loss[k, j])
    allowed = tol * surface_range
    interior = not edges_touched((k, j), loss.shape)
    own_gap, plane_gap = final_loss - minimum, plane_loss - minimum
    return {
        "final_loss": float(final_loss),
        "final_plane_loss": float(plane_loss),
        "final_coords": [float(point[0]), float(point[1])],
        "surface_min": minimum,
        "surface_min_coords": [float(a[j]), float(b[k])],
        "surface_min_interior": interior,
        "surface_range": surface_range,
        "gap_over_range": own_gap / surface_range if surface_range > 0 else 0.0,
        "plane_gap_over_range": plane_gap / surface_range if surface_range > 0 else 0.0,
        "tolerance": tol,
        "in_basin": bool(interior and own_gap <= allowed and plane_gap <= allowed),
    }
