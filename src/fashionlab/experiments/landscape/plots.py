"""Figures of the landscape stage: a 3-D surface with the path and a contour panel (PNG/PDF), and a
self-contained interactive Plotly view (HTML with plotly.js embedded, works offline).

The path is drawn at each snapshot's *own* loss (``LandscapeResult.trajectory_loss``), not at the
surface height under its projection: snapshots lie off the plane (the residual is printed), so a
point above or below the surface is information, not an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

from ...utils import atomic_write_text, save_figure  # noqa: E402

if TYPE_CHECKING:
    from .evaluate import LandscapeResult

__all__ = [
    "landscape_figure",
    "plot_landscape",
    "plotly_figure",
    "landscape_html",
    "write_landscape_html",
    "RUN_COLOURS",
    "COLORMAP",
]

# Path colours chosen to stand out on viridis (dark blue -> yellow).
RUN_COLOURS = ("#e8112d", "#ff5ce1", "#ff8c00", "#000000")
COLORMAP = "viridis"


def _paths(result: LandscapeResult) -> list[tuple[int, np.ndarray]]:
    """(run, row indices in time order) per run."""
    trajectory = result.trajectory
    return [(r, np.flatnonzero(trajectory.run == r)) for r in trajectory.runs()]


def _axis_labels(result: LandscapeResult) -> tuple[str, str]:
    ratio = result.plane.explained_variance_ratio
    return (f"PC1 ({100 * ratio[0]:.1f}% of variance)", f"PC2 ({100 * ratio[1]:.1f}% of variance)")


def _footnote(result: LandscapeResult, sep: str = "  ") -> str:
    return (
        f"{result.plane.description}.{sep}Surface: f_CE on {result.n_examples:,} training examples "
        f"(BatchNorm eval, no dropout).{sep}Path heights = each snapshot's own loss, not the "
        "surface under it (median off-plane distance: "
        f"{100 * np.median(result.plane.residual):.0f}% of its distance to the origin)."
    )


def _norm(values: np.ndarray) -> Normalize:
    """A log colour scale when the grid spans more than a factor of 20 (far corners explode)."""
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if low > 0 and high / low > 20:
        return LogNorm(low, high)
    return Normalize(low, high)


def landscape_figure(
    result: LandscapeResult, *, title: str | None = None, view: tuple[float, float] = (32.0, -128.0)
) -> plt.Figure:
    """The 3-D surface with the path(s) (left) and the contour map with the path(s) (right).

    Args:
        result: from :func:`fashionlab.experiments.landscape.loss_landscape`.
        title: figure title.
        view: (elevation, azimuth) of the 3-D panel in degrees.

    Returns:
        The matplotlib figure (the caller saves and closes it).
    """
    A, B = np.meshgrid(result.a, result.b)
    Z = result.loss
    norm = _norm(Z)
    xlabel, ylabel = _axis_labels(result)
    coords, heights = result.coords, result.trajectory_loss
    fig = plt.figure(figsize=(14, 6.4))
    # computed_zorder=False: draw by zorder, so the path is never hidden behind surface polygons.
    ax3d = fig.add_subplot(1, 2, 1, projection="3d", computed_zorder=False)
    colours = plt.get_cmap(COLORMAP)(norm(Z))
    ax3d.plot_surface(
        A,
        B,
        Z,
        facecolors=colours,
        rcount=Z.shape[0],
        ccount=Z.shape[1],
        linewidth=0.15,
        edgecolor=(0, 0, 0, 0.12),
        antialiased=True,
        alpha=0.9,
        shade=False,
        zorder=1,
    )
    ax2 = fig.add_subplot(1, 2, 2)
    levels = (
        np.geomspace(norm.vmin, norm.vmax, 25)
        if isinstance(norm, LogNorm)
        else np.linspace(norm.vmin, norm.vmax, 25)
    )
    filled = ax2.contourf(A, B, Z, levels=levels, cmap=COLORMAP, norm=norm)
    filled.set_edgecolor("face")  # no hairline gaps between the filled levels in the PDF
    ax2.contour(A, B, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.35)
    for run, rows in _paths(result):
        colour = RUN_COLOURS[run % len(RUN_COLOURS)]
        xs, ys, zs = coords[rows, 0], coords[rows, 1], heights[rows]
        label = f"run {run + 1}" if len(result.trajectory.runs()) > 1 else "SGD path"
        ax3d.plot(xs, ys, zs, color=colour, lw=2.0, zorder=10, label=f"{label} (snapshot losses)")
        ax3d.scatter(
            xs,
            ys,
            zs,
            color=colour,
            s=10,
            edgecolors="k",
            linewidths=0.3,
            depthshade=False,
            zorder=11,
        )
        ax2.plot(
            xs, ys, "-o", color=colour, ms=2.5, lw=1.4, mec="k", mew=0.3, label=label, zorder=10
        )
        for ax, point in ((ax3d, (xs, ys, zs)), (ax2, (xs, ys))):
            ax.scatter(
                *(p[:1] for p in point),
                marker="o",
                s=70,
                color="white",
                edgecolors=colour,
                linewidths=2,
                zorder=12,
                label="start (initial)" if run == 0 else None,
            )
            ax.scatter(
                *(p[-1:] for p in point),
                marker="*",
                s=200,
                color="gold",
                edgecolors="k",
                linewidths=0.8,
                zorder=13,
                label="end (final)" if run == 0 else None,
            )
    ax2.plot(0, 0, "+", color="white", ms=12, mew=2, zorder=9, label="origin of the plane")
    ax3d.set(xlabel=xlabel, ylabel=ylabel, zlabel="training loss $f_{CE}$")
    ax3d.view_init(elev=view[0], azim=view[1])
    ax3d.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax2.set(xlabel=xlabel, ylabel=ylabel, title="contours of $f_{CE}$ with the projected path")
    ax2.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.colorbar(
        filled,
        ax=ax2,
        label="training loss $f_{CE}$" + (" (log scale)" if isinstance(norm, LogNorm) else ""),
    )
    fig.suptitle(
        title or "Loss landscape along the top-2 PCA directions of the SGD trajectory", fontsize=13
    )
    fig.text(0.5, 0.005, _footnote(result, sep="\n"), ha="center", va="bottom", fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.97, bottom=0.16, top=0.91, wspace=0.12)
    return fig


def plot_landscape(
    result: LandscapeResult, stem: str | os.PathLike[str], *, title: str | None = None
) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` of :func:`landscape_figure`; returns the paths."""
    stem = Path(stem)
    return save_figure(landscape_figure(result, title=title), stem)


def plotly_figure(result: LandscapeResult, *, title: str | None = None) -> Any:
    """The interactive view: the surface (Viridis) and each run's path at its snapshots' own
    losses."""
    import plotly.graph_objects as go

    xlabel, ylabel = _axis_labels(result)
    fig = go.Figure()
    fig.add_trace(
        go.Surface(
            x=result.a,
            y=result.b,
            z=result.loss,
            colorscale="Viridis",
            opacity=0.88,
            name="loss surface",
            colorbar={"title": {"text": "f_CE"}, "len": 0.75},
            contours={"z": {"show": True, "usecolormap": True, "project": {"z": True}}},
        )
    )
    trajectory = result.trajectory
    for run, rows in _paths(result):
        colour = RUN_COLOURS[run % len(RUN_COLOURS)]
        xs, ys, zs = result.coords[rows, 0], result.coords[rows, 1], result.trajectory_loss[rows]
        text = [
            f"run {run + 1}, step {s}, epoch {e:.2f}<br>snapshot loss {z:.4f}<br>off-plane "
            f"{100 * r:.1f}%"
            for s, e, z, r in zip(
                trajectory.step[rows],
                trajectory.epoch_fraction[rows],
                zs,
                result.plane.residual[rows],
                strict=True,
            )
        ]
        fig.add_trace(
            go.Scatter3d(
                x=xs,
                y=ys,
                z=zs,
                mode="lines+markers",
                name=f"run {run + 1} path",
                line={"color": colour, "width": 6},
                marker={"size": 3, "color": colour},
                text=text,
                hoverinfo="text",
            )
        )
        for index, symbol, label in ((0, "circle-open", "start"), (-1, "diamond", "end")):
            fig.add_trace(
                go.Scatter3d(
                    x=xs[[index]],
                    y=ys[[index]],
                    z=zs[[index]],
                    mode="markers",
                    name=f"run {run + 1} {label}",
                    marker={
                        "size": 7,
                        "color": "gold" if label == "end" else colour,
                        "symbol": symbol,
                        "line": {"color": "black", "width": 2},
                    },
                )
            )
    heading = title or "Loss landscape along the top-2 PCA directions of the SGD trajectory"
    fig.update_layout(
        title={
            "text": f"{heading}<br><sup>{_footnote(result, sep='<br>')}</sup>",
            "font": {"size": 15},
        },
        scene={
            "xaxis": {"title": {"text": xlabel}},
            "yaxis": {"title": {"text": ylabel}},
            "zaxis": {"title": {"text": "training loss f_CE"}},
            "camera": {"eye": {"x": -1.65, "y": -1.65, "z": 1.05}},
        },
        margin={"l": 0, "r": 0, "t": 110, "b": 0},
        legend={"x": 0.01, "y": 0.85},
        height=720,
    )
    return fig


def landscape_html(result: LandscapeResult, *, title: str | None = None) -> str:
    """A self-contained HTML page (plotly.js inline, no network access) of :func:`plotly_figure`."""
    fig = plotly_figure(result, title=title)
    return fig.to_html(
        include_plotlyjs=True, full_html=True, config={"displaylogo": False, "responsive": True}
    )


def write_landscape_html(
    result: LandscapeResult, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write :func:`landscape_html` to ``path`` atomically."""
    return atomic_write_text(path, landscape_html(result, title=title))
