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

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import MaxNLocator

from ...atomic import atomic_write_text
from ...figures import MATH_PT, pyplot, save_figure

if TYPE_CHECKING:
    from .evaluate import LandscapeResult

plt = pyplot()  # the Agg backend: figures go to files only

__all__ = [
    "contour_figure",
    "landscape_figure",
    "plot_landscape",
    "plotly_figure",
    "landscape_html",
    "write_landscape_html",
    "RUN_COLOURS",
    "COLORMAP",
    "FIGURE_SIZE",
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
    return (
        f"PC1 ({100 * ratio[0]:.1f} % of the variance)",
        f"PC2 ({100 * ratio[1]:.1f} % of the variance)",
    )


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


# Printed at this size in the report (16 cm wide), so every font size below is its print size.
FIGURE_SIZE = (6.3, 6.5)  # inches
FONT_SIZE = 8.0  # points; nothing smaller than 7
LOSS_LABEL = r"training loss $f_{\mathrm{CE}}$"
_STYLE = {
    "font.size": FONT_SIZE,
    "axes.labelsize": FONT_SIZE,
    "axes.titlesize": FONT_SIZE + 1,
    "xtick.labelsize": 7.0,
    "ytick.labelsize": 7.0,
    "legend.fontsize": 7.5,
    "mathtext.fontset": "dejavusans",
}
# How the 3-D surface is drawn: thin translucent grid lines, the colours of the contour map.
_SURFACE = {
    "linewidth": 0.15,
    "edgecolor": (0, 0, 0, 0.12),
    "antialiased": True,
    "alpha": 0.85,
    "shade": False,
    "zorder": 1,
}


def landscape_figure(
    result: LandscapeResult,
    *,
    title: str | None = None,
    view: tuple[float, float] = (28.0, -62.0),
    basin_minima: list[tuple[float, float]] | None = None,
) -> plt.Figure:
    """The 3-D surface with the path(s) (top) and the contour map with the path(s) (bottom), drawn
    at :data:`FIGURE_SIZE`, the size the report prints it at.

    Args:
        result: from :func:`fashionlab.experiments.landscape.loss_landscape`.
        title: figure title (None: none; the report's caption says it).
        view: (elevation, azimuth) of the 3-D panel in degrees.
        basin_minima: (a, b) of the surface's minimum near each run's final model, marked on the
            contour map.

    Returns:
        The matplotlib figure (the caller saves and closes it).
    """
    with plt.rc_context(_STYLE):
        return _draw(result, title, view, basin_minima or [])


def _draw(
    result: LandscapeResult,
    title: str | None,
    view: tuple[float, float],
    basin_minima: list[tuple[float, float]],
) -> plt.Figure:
    A, B = np.meshgrid(result.a, result.b)
    Z = result.loss
    norm = _norm(Z)
    coords, heights = result.coords, result.trajectory_loss
    several = len(result.trajectory.runs()) > 1
    fig = plt.figure(figsize=FIGURE_SIZE)
    top = 0.93 if title else 0.97
    # computed_zorder=False: draw by zorder, so the path is never hidden behind surface polygons.
    ax3d = fig.add_axes((-0.03, 0.46, 0.96, top - 0.44), projection="3d", computed_zorder=False)
    ax2 = fig.add_axes((0.1, 0.135, 0.72, 0.265))
    cax = fig.add_axes((0.84, 0.135, 0.025, 0.265))
    colours = plt.get_cmap(COLORMAP)(norm(Z))
    ax3d.plot_surface(A, B, Z, facecolors=colours, rcount=len(Z), ccount=Z.shape[1], **_SURFACE)
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
        label = f"run {run + 1}" if several else "SGD path"
        ax3d.plot(xs, ys, zs, color=colour, lw=1.4, zorder=10, label=label)
        ax3d.scatter(xs, ys, zs, color=colour, s=4, edgecolors="none", depthshade=False, zorder=11)
        ax2.plot(xs, ys, "-o", color=colour, ms=2, lw=1.0, mec="none", label=label, zorder=10)
        _mark_ends(
            ((ax3d, (xs, ys, zs)), (ax2, (xs, ys))), colour, legend=ax2 if run == 0 else None
        )
    _mark_basin_minima(ax2, basin_minima)
    _label_axes(ax3d, ax2, result, view)
    _colour_bar_and_legend(fig, cax, ax2, filled, norm)
    # Plain text, no mathtext: a subscript prints at 70 % of the size, under 7 pt here.
    note = result.plane.description.replace("θ_i", "θᵢ")
    fig.text(0.5, 0.995, note, ha="center", va="top", fontsize=7.0)
    if title:
        fig.suptitle(title, fontsize=FONT_SIZE + 1, y=0.97)
    return fig


def _mark_ends(panels: Any, colour: str, legend: Any) -> None:
    """A path's start (white circle) and end (gold star) on each ``(axes, (xs, ys[, zs]))``; the
    axes ``legend`` labels them."""
    for ax, point in panels:
        ax.scatter(
            *(p[:1] for p in point),
            marker="o",
            s=30,
            color="white",
            edgecolors=colour,
            linewidths=1.5,
            zorder=12,
            label="start (initial weights)" if ax is legend else None,
        )
        ax.scatter(
            *(p[-1:] for p in point),
            marker="*",
            s=90,
            color="gold",
            edgecolors="k",
            linewidths=0.6,
            zorder=13,
            label="end (final model)" if ax is legend else None,
        )


def _mark_basin_minima(ax: Any, basin_minima: list[tuple[float, float]]) -> None:
    """The lowest surface point near each run's end, on the contour map."""
    for index, (a, b) in enumerate(basin_minima):
        ax.plot(
            a,
            b,
            "X",
            color="white",
            mec="k",
            ms=6,
            mew=0.6,
            zorder=14,
            label="lowest surface point near the end" if index == 0 else None,
        )


def _label_axes(ax3d: Any, ax2: Any, result: LandscapeResult, view: tuple[float, float]) -> None:
    """Axis labels, the 3-D view and the contour map's limits (the grid's extent)."""
    xlabel, ylabel = _axis_labels(result)
    ax3d.set_xlabel(xlabel, labelpad=-2)
    ax3d.set_ylabel(ylabel, labelpad=-2)
    ax3d.set_zlabel(LOSS_LABEL, labelpad=-4, fontsize=MATH_PT)  # its subscript >= 7 pt
    ax3d.tick_params(pad=-2)
    ax3d.view_init(elev=view[0], azim=view[1])
    ax2.set(xlabel=xlabel, ylabel=ylabel)
    ax2.set_xlim(result.a[0], result.a[-1])
    ax2.set_ylim(result.b[0], result.b[-1])


def _colour_bar_and_legend(
    fig: plt.Figure, cax: Any, ax2: Any, filled: Any, norm: Normalize
) -> None:
    """The colour bar of the contour map, and one legend under the figure (the runs first)."""
    bar = fig.colorbar(filled, cax=cax)
    bar.locator = MaxNLocator(nbins=6)
    bar.update_ticks()
    bar.set_label(
        LOSS_LABEL + (" (log scale)" if isinstance(norm, LogNorm) else ""), fontsize=MATH_PT
    )
    handles, labels = ax2.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (not labels[i].startswith("run"), i))
    fig.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="lower center",
        ncol=3,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )


def contour_figure(
    result: LandscapeResult, *, basin_minima: list[tuple[float, float]] | None = None
) -> plt.Figure:
    """The contour map with the path(s) alone: a smaller companion of :func:`landscape_figure`
    (the two-run view), at :data:`FIGURE_SIZE`'s width and the same text sizes."""
    with plt.rc_context(_STYLE):
        A, B = np.meshgrid(result.a, result.b)
        Z = result.loss
        norm = _norm(Z)
        xlabel, ylabel = _axis_labels(result)
        fig = plt.figure(figsize=(FIGURE_SIZE[0], 3.1))
        ax = fig.add_axes((0.1, 0.3, 0.72, 0.6))
        cax = fig.add_axes((0.84, 0.3, 0.025, 0.6))
        levels = np.linspace(norm.vmin, norm.vmax, 25)
        filled = ax.contourf(A, B, Z, levels=levels, cmap=COLORMAP, norm=norm)
        filled.set_edgecolor("face")
        ax.contour(A, B, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.35)
        for run, rows in _paths(result):
            colour = RUN_COLOURS[run % len(RUN_COLOURS)]
            xs, ys = result.coords[rows, 0], result.coords[rows, 1]
            ax.plot(xs, ys, "-o", color=colour, ms=2, lw=1.0, mec="none", label=f"run {run + 1}")
            ax.scatter(xs[:1], ys[:1], s=30, color="white", edgecolors=colour, zorder=12)
            ax.scatter(xs[-1:], ys[-1:], marker="*", s=90, color="gold", edgecolors="k", zorder=13)
        for a, b in basin_minima or []:
            ax.plot(a, b, "X", color="white", mec="k", ms=6, mew=0.6, zorder=14)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_xlim(result.a[0], result.a[-1])
        ax.set_ylim(result.b[0], result.b[-1])
        bar = fig.colorbar(filled, cax=cax)
        bar.locator = MaxNLocator(nbins=6)
        bar.update_ticks()
        bar.set_label(LOSS_LABEL, fontsize=MATH_PT)
        fig.legend(loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 0.0))
        note = result.plane.description.replace("θ_i", "θᵢ")
        fig.text(0.5, 0.995, note, ha="center", va="top", fontsize=7.0)
        return fig


def plot_landscape(
    result: LandscapeResult,
    stem: str | os.PathLike[str],
    *,
    title: str | None = None,
    basin_minima: list[tuple[float, float]] | None = None,
    contour_only: bool = False,
) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` of :func:`landscape_figure` (or, with
    ``contour_only``, :func:`contour_figure`) at its print size (no tight bounding box); returns
    the paths."""
    figure = (
        contour_figure(result, basin_minima=basin_minima)
        if contour_only
        else landscape_figure(result, title=title, basin_minima=basin_minima)
    )
    return save_figure(figure, Path(stem), dpi=200, bbox_inches=None)


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
