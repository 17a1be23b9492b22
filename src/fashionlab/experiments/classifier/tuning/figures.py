"""The tuning figures of a study, drawn at print size (16 cm wide, no text under 7 pt):
``tuning_curves`` (validation accuracy against epochs, one line per trial, its rungs as points,
pruned trials ending early), ``tuning_best`` (the best rung value so far against the trial
number) and ``tuning_importance`` (Optuna's parameter importances, fANOVA seeded)."""

from __future__ import annotations

import itertools
import logging
import warnings
from pathlib import Path
from typing import Any

from ....figures import pyplot, save_figure

__all__ = ["plot_tuning"]

logger = logging.getLogger(__name__)

WIDTH_IN = 16 / 2.54  # the report prints figures 16 cm wide
FONT_PT = 8


LABELS = {  # parameter names as the report writes them
    "lr": r"learning rate $\eta$",
    "effective_lr": r"effective rate $\eta/(1-\mu)$",
    "l2": r"L2 strength $\lambda$",
    "momentum": r"momentum $\mu$",
    "batch_size": r"minibatch size $B$",
    "hidden_layers": r"hidden layers $L$",
    "units": r"units per layer $n$",
    "dropout": r"dropout $p$",
    "batchnorm": "BatchNorm",
    "activation": "activation",
}
RC = {
    "font.size": FONT_PT,
    "axes.titlesize": FONT_PT + 1,
    "axes.labelsize": FONT_PT,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
}


def plot_tuning(out_dir: str | Path, study, best: dict[str, Any]) -> list[Path]:
    """Draw the three tuning figures of ``study`` into ``out_dir``; returns the files written.

    ``best`` is best.json's dict (its pick is starred). The importance figure is left out when
    fewer than two trials are COMPLETE (fANOVA needs them)."""
    plt = pyplot()
    with plt.rc_context(RC):
        return _plot(plt, Path(out_dir), study, best)


def curves_floor(values: list[float]) -> float:
    """The lower y-limit of the tuning curves (percent): at most 15 points under the best value,
    so the good trials are told apart; values below it are off the figure."""
    return max(min(values), max(values) - 15) - 0.5


def best_floor(best_so_far: list[float]) -> float:
    """The lower y-limit of the best-so-far figure (percent): 3 points under the first trial."""
    return best_so_far[0] - 3


def _plot(plt, out_dir: Path, study, best: dict[str, Any]) -> list[Path]:
    from optuna.trial import TrialState

    finished = sorted(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)),
        key=lambda t: t.number,
    )
    written = _figure(
        plt, (WIDTH_IN, 2.8), out_dir / "tuning_curves", lambda ax: _curves(ax, finished, best)
    )
    written += _figure(
        plt, (WIDTH_IN, 2.3), out_dir / "tuning_best", lambda ax: _best(ax, finished)
    )
    importances = _importances(study)
    if importances:
        size = (WIDTH_IN, 0.25 * len(importances) + 0.6)
        written += _figure(
            plt, size, out_dir / "tuning_importance", lambda ax: _bars(ax, importances)
        )
    return written


def _figure(plt, size: tuple[float, float], stem: Path, draw) -> list[Path]:
    """One figure of ``size`` inches drawn by ``draw(ax)``, saved as ``stem`` (png and pdf)."""
    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax)
    except BaseException:
        plt.close(fig)
        raise
    return save_figure(fig, stem)


def _curves(ax, finished: list[Any], best: dict[str, Any]) -> None:
    """Validation accuracy against epochs, one line per trial, the pick starred."""
    from optuna.trial import TrialState

    rungs = sorted({int(r) for t in finished for r in t.intermediate_values})
    for trial in finished:
        steps = sorted(trial.intermediate_values)
        values = [100 * trial.intermediate_values[s] for s in steps]
        pruned = trial.state == TrialState.PRUNED
        ax.plot(
            steps,
            values,
            marker="o",
            ms=2.5,
            lw=0.8,
            alpha=0.45 if pruned else 0.9,
            color="tab:gray" if pruned else "tab:blue",
            ls="--" if pruned else "-",
        )
    ax.plot([], [], color="tab:blue", marker="o", ms=2.5, lw=0.8, label="reached the top rung")
    ax.plot([], [], color="tab:gray", ls="--", marker="o", ms=2.5, lw=0.8, label="pruned")
    ax.plot(
        [best["epochs"]],
        [100 * best["val_acc"]],
        marker="*",
        ms=10,
        color="tab:red",
        ls="none",
        label=f"pick: trial {best['number']}, {best['epochs']} epochs",
    )
    tops = [100 * v for t in finished for v in t.intermediate_values.values()]
    if tops:
        ax.set_ylim(curves_floor(tops), max(tops) + 1)
    ax.set_xscale("log")
    ax.set_xticks(rungs, [str(r) for r in rungs])
    ax.minorticks_off()
    _finish_axes(ax, "epochs (rung length, log scale)")


def _best(ax, finished: list[Any]) -> None:
    """Each trial's best rung value and the best so far, in trial order."""
    bests = [
        (t.number, 100 * max(t.intermediate_values.values()))
        for t in finished
        if t.intermediate_values
    ]
    numbers = [number for number, _ in bests]
    best_so_far = list(itertools.accumulate((value for _, value in bests), max))
    ax.scatter(
        numbers,
        [value for _, value in bests],
        s=8,
        color="tab:gray",
        label="trial's best rung value",
    )
    ax.step(numbers, best_so_far, where="post", color="tab:blue", label="best so far")
    if best_so_far:
        ax.set_ylim(best_floor(best_so_far), best_so_far[-1] + 0.5)
    _finish_axes(ax, "trial number")


def _bars(ax, importances: dict[str, float]) -> None:
    """The parameter importances as horizontal bars, the largest on top."""
    names = list(importances)[::-1]
    ax.barh(
        [LABELS.get(n, n) for n in names],
        [importances[n] for n in names],
        color="tab:blue",
    )
    ax.set_xlabel("importance (fANOVA, share of the variance of the trial values)")
    ax.grid(alpha=0.3, axis="x")


def _importances(study) -> dict[str, float] | None:
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
    except (RuntimeError, ValueError) as exc:  # e.g. a parameter that never varied
        logger.warning("no parameter importances: %s", exc)
        return None


def _finish_axes(ax, xlabel: str) -> None:
    """The labels, grid and legend both validation-accuracy panels share."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", frameon=False)
