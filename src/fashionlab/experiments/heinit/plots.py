"""Figures of the He-initialization stage: per-layer variances by depth, and the identity checks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from ...figures import MATH_PT, PRINT_WIDTH_IN, print_style, pyplot, save_figure

if TYPE_CHECKING:
    from .depth import DepthCurve, DepthResult
    from .identities import HeInitResult

plt = pyplot()  # the Agg backend: figures go to files only

__all__ = ["plot_depth", "plot_identities"]

# One colour per scheme across all panels; He is the curve to look at.
STYLE = {
    "he": dict(color="tab:blue", lw=2.2, zorder=5),
    "he_relu_gain": dict(color="tab:cyan", lw=1.6, ls="--", zorder=4),
    "xavier": dict(color="tab:green", lw=1.6),
    "normal_1": dict(color="tab:red", lw=1.6),
    "normal_0.01": dict(color="tab:purple", lw=1.6),
}


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    # tight_layout already ran: bbox_inches=None keeps the drawn (printed) size
    return save_figure(fig, stem, dpi=200, bbox_inches=None)


def _decade_ticks(ax: plt.Axes, *, nbins: int = 7) -> None:
    """Log axis ticks at round decades (1e-90, 1e-60, ...) with plain-text labels: no minor ticks,
    and no mathtext (laying out one mathtext label per decade is slow on an axis that spans
    hundreds of decades)."""
    low, high = (math.log10(v) for v in ax.get_ylim())
    exponents = MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 3, 5, 10], integer=True).tick_values(
        low, high
    )
    ax.yaxis.set_major_locator(FixedLocator([10.0**e for e in exponents if low <= e <= high]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(
        FuncFormatter(lambda v, _: f"1e{round(math.log10(v))}" if v > 0 else "0")
    )


def _title(result: DepthResult) -> str:
    if result.activation == "relu":
        return "ReLU"
    return f"LeakyReLU a={result.negative_slope:g}"


# Legend entries in plain Unicode: no mathtext subscripts, which would print under 7 pt.
LEGEND = {"xavier": "Xavier/Glorot: N(0, 2/(fan-in + fan-out))"}


def _values(curve: DepthCurve, key: str) -> np.ndarray:
    values = np.asarray(getattr(curve, key), dtype=float)
    values[~np.isfinite(values) | (values <= 0)] = np.nan
    return values


def plot_depth(results: tuple[DepthResult, ...], stem: str | Path) -> list[Path]:
    """Rows = activations; columns = forward Var[z_l], backward Var[dL/dz_l] (log scale, all
    schemes) and a zoom on the He curves (forward solid, backward dotted). Drawn at the report's
    text width with :data:`~fashionlab.figures.PRINT_RC` sizes.

    Returns:
        The PNG and PDF paths (``stem`` + ``.png`` / ``.pdf``).
    """
    stem = Path(stem)
    with print_style():
        fig, axes = plt.subplots(
            len(results),
            3,
            figsize=(PRINT_WIDTH_IN, 2.0 * len(results) + 0.7),
            squeeze=False,
            sharex=True,
            gridspec_kw={"width_ratios": [1, 1, 0.8]},
        )
        handles: dict[str, Any] = {}
        for row, result in zip(axes, results, strict=True):
            layers = np.arange(1, result.depth + 1)
            for ax, key, ylabel, what in (
                (row[0], "forward_var", r"$\mathrm{Var}[z_l]$", "forward"),
                (row[1], "backward_var", r"$\mathrm{Var}[\partial L/\partial z_l]$", "backward"),
            ):
                for curve in result.curves:
                    (line,) = ax.plot(
                        layers,
                        _values(curve, key),
                        label=LEGEND.get(curve.scheme, curve.label),
                        **{**STYLE.get(curve.scheme, {}), "lw": 1.2},
                    )
                    handles.setdefault(LEGEND.get(curve.scheme, curve.label), line)
                ax.set_yscale("log")
                _decade_ticks(ax, nbins=5)
                ax.set_ylabel(ylabel, labelpad=1, fontsize=MATH_PT)
                ax.set_title(f"{_title(result)}: {what}")
            zoom = row[2]
            for curve in result.curves:
                if curve.scheme.startswith("he"):
                    style = {**STYLE[curve.scheme], "lw": 1.2}
                    zoom.plot(layers, _values(curve, "forward_var"), **style)
                    zoom.plot(layers, _values(curve, "backward_var"), **{**style, "ls": ":"})
            zoom.set_yscale("log")
            zoom.set_ylim(0.25, 40)
            zoom.set_yticks([0.25, 1, 4, 16], ["0.25", "1", "4", "16"])
            zoom.yaxis.set_minor_locator(NullLocator())
            zoom.set_title("He only (dotted: backward)")
            for ax in row:
                ax.grid(True, alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("layer $l$", fontsize=MATH_PT)
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="lower center",
            ncol=min(len(handles), 3),
            frameon=False,
            handlelength=1.8,
            columnspacing=1.2,
        )
        rows = math.ceil(len(handles) / 3)
        fig.tight_layout(rect=(0, 0.045 * rows + 0.01, 1, 1), h_pad=0.6, w_pad=0.4)
        return _save(fig, stem)


def plot_identities(result: HeInitResult, stem: str | Path) -> list[Path]:
    """Forest plot of (lhs - rhs) / SE per identity row, symlog, with the +-z acceptance band,
    drawn at the report's text width.

    Returns:
        The PNG and PDF paths (``stem`` + ``.png`` / ``.pdf``).
    """
    stem = Path(stem)
    rows = result.identities
    z = result.config.z
    with print_style():
        fig, ax = plt.subplots(
            figsize=(PRINT_WIDTH_IN, 0.14 * len(rows) + 0.95), layout="constrained"
        )
        ys = np.arange(len(rows))[::-1]
        ax.axvspan(-z, z, color="0.87", lw=0, label=f"within ±{z:g} SE: the identity holds")
        for y, row in zip(ys, rows, strict=True):
            score = row.z_score if math.isfinite(row.z_score) else np.sign(row.z_score) * 1e6
            color = "tab:blue" if row.expected_to_hold else "tab:red"
            marker = "o" if row.holds == row.expected_to_hold else "X"
            ax.errorbar(score, y, xerr=z, fmt=marker, color=color, ms=3.5, capsize=2, lw=0.9)
        # The identity's name and case (its formula is in the report's table, same order)
        labels = [f"{row.step}  {row.name.replace('_', ' ')}: {row.case}" for row in rows]
        ax.set_yticks(ys, labels, fontsize=7.5)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xscale("symlog", linthresh=z, linscale=0.6)
        limit = max(10 * z, *(abs(row.z_score) * 2 for row in rows if math.isfinite(row.z_score)))
        ax.set_xlim(-limit, limit)
        ticks = [t for t in (z, 10, 100, 1000, 10000) if z <= t < limit]
        ax.set_xticks(
            [-t for t in ticks[::-1]] + [0] + ticks,
            [f"−{t:g}" for t in ticks[::-1]] + ["0"] + [f"{t:g}" for t in ticks],
        )
        ax.xaxis.set_minor_locator(NullLocator())
        ax.axvline(0, color="k", lw=0.6)
        ax.set_xlabel(f"(lhs − rhs) / standard error   (bars: ±{z:g} SE; symmetric log scale)")
        ax.plot([], [], "o", color="tab:blue", ms=3.5, label="assumptions hold")
        ax.plot([], [], "o", color="tab:red", ms=3.5, label="an assumption broken")
        ax.plot([], [], "X", color="k", ms=3.5, label="verdict differs from expectation")
        fig.legend(loc="outside lower center", ncol=2, frameon=False)
        return _save(fig, stem)
