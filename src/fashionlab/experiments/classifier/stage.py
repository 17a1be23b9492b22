"""Retrain a chosen setting on the training images, test it once, draw the last 20 SGD iterations.

The retrain takes the pick as the study chose it, with its length: ``epochs`` is the rung the
pick was scored at on validation, and the WSD schedule is the one the rung's run had. It trains
on all 60,000 training images (train + validation), keeping the number of *epochs* (so 60,000 /
50,000 as many SGD steps as the scored run; the schedule's shape over the epochs is the same).
One model per seed (three by default), each tested once; test.json holds every seed's accuracy,
their mean and standard deviation; the figure and model.pt are the first seed's.

File formats: ``docs/run-directory.md`` (``classifier/``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...atomic import atomic_write_json
from ...checkpoint import save_checkpoint
from ...data import Split, find_source, load_test, load_train
from ...errors import ConfigError, FashionLabError
from ...figures import MATH_PT, PRINT_WIDTH_IN, print_style, pyplot, save_figure
from ...models import model_name
from ...runtime import Stopwatch
from ...threads import torch_threads
from ...train import FitResult, TrainConfig, evaluate
from .config import ClassifierConfig
from .seeds import train_seeds
from .space import settings_from_params

__all__ = [
    "ClassifierResult",
    "run_classifier",
    "plot_last_iterations",
    "format_last_iterations",
    "format_side_by_side",
]

logger = logging.getLogger(__name__)


@dataclass
class ClassifierResult:
    """What :func:`run_classifier` produced; ``test`` is the content of test.json."""

    out_dir: Path
    test: dict[str, Any]
    model: Any  # the trained MLP, in eval mode

    @property
    def test_accuracy(self) -> float:
        """The mean test accuracy over the seeds."""
        return float(self.test["test_accuracy"])


def run_classifier(
    out_dir: str | os.PathLike[str],
    best_params: dict[str, Any],
    config: ClassifierConfig | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> ClassifierResult:
    """Retrain ``best_params`` on the 60,000 training images, test once, write the stage files.

    Args:
        out_dir: the stage directory (``<run>/classifier`` or ``<run>/variant``).
        best_params: a flat setting, e.g. ``TuneResult.best_params`` or best.json ``params``,
            or a whole best.json dict (``TuneResult.best``): then the ablation reuses the
            study's own run of the pick.
        config: retrain settings (default :class:`ClassifierConfig`).
        data_dir: the Fashion-MNIST folder (default: the data layer's search order).
        progress: a tqdm bar over the SGD steps.

    Returns:
        A :class:`ClassifierResult`.

    Raises:
        ConfigError: an impossible setting (refused before training).
        FashionLabError: the retrain diverged (no test is run on a NaN model).
    """
    config = config or ClassifierConfig()
    params = _params_of(best_params, config)
    model_config, train_config = settings_from_params(
        params, seed=config.seeds[0], epochs=config.epochs
    )
    out_dir = Path(out_dir)
    find_source(data_dir, "all")  # the test files are read after training: refuse their absence now
    with Stopwatch() as watch:
        train = _training_images(data_dir, config, train_config.batch_size)
        runs = _retrain(model_config, train, train_config, config, progress=progress)
        model, result = runs[0]
        atomic_write_json(
            out_dir / "history.json", _history(result, len(train), train_config, config)
        )
        _refuse_divergence(runs, model.name, train_config.lr, config.seeds)
        test = load_test(data_dir)
        tested = [evaluate(m, test, config.device) for m, _ in runs]
        losses = [loss for loss, _ in tested]
        accuracies = [accuracy for _, accuracy in tested]
        last = result.history.train_loss[-config.last_n :]
        first_step = len(result.history.train_loss) - len(last) + 1
        figures = plot_last_iterations(
            out_dir, last, first_step, accuracies[0], model.name, config.label, seed=config.seeds[0]
        )
        summary = _summary(
            config,
            params,
            runs,
            train_config,
            tested=(losses, accuracies, len(test)),
            last=(last, first_step),
            train_examples=len(train),
            figures=figures,
        )
        save_checkpoint(
            out_dir / "model.pt", model, kind="mlp", config=model.config, metrics=summary
        )
    if config.ablation:
        _ablation(out_dir, best_params, params, train_config.epochs, config, data_dir)
    summary["seconds"] = watch.seconds
    atomic_write_json(out_dir / "test.json", summary)
    return ClassifierResult(out_dir, summary, model.eval())


def _params_of(best_params: Any, config: ClassifierConfig) -> dict[str, Any]:
    """The flat setting in ``best_params`` (a setting or a whole best.json), checked."""
    params = dict(best_params.get("params", best_params)) if isinstance(best_params, dict) else None
    if params is None:
        raise ConfigError(
            f"best_params must be a dict (best.json params), got {type(best_params).__name__}"
        )
    if config.epochs is None and "epochs" not in params:
        raise ConfigError(
            f"the setting {params} has no epochs and the retrain none either; give epochs"
        )
    return params


def _training_images(
    data_dir: str | os.PathLike[str] | None, config: ClassifierConfig, batch_size: int
) -> Split:
    """The training images (all of them, or ``max_train`` drawn with the first seed)."""
    train = load_train(data_dir)
    if config.max_train is not None:
        train = train.subset(config.max_train, seed=config.seeds[0])
    if batch_size > len(train):
        raise ConfigError(
            f"batch size {batch_size} is larger than the training set "
            f"({len(train)} examples); lower batch_size or raise max_train"
        )
    return train


def _retrain(
    model_config: dict[str, Any],
    train: Split,
    train_config: TrainConfig,
    config: ClassifierConfig,
    *,
    progress: bool,
) -> list[tuple[Any, FitResult]]:
    """One model per seed, trained under the stage's thread count."""
    with torch_threads(config.threads):
        logger.info(
            "retraining %s on %d images for %d epochs (lr %.4g, batch %d), seeds %s",
            model_name(model_config),
            len(train),
            train_config.epochs,
            train_config.lr,
            train_config.batch_size,
            list(config.seeds),
        )
        return train_seeds(
            model_config,
            train,
            train_config,
            config.seeds,
            device=config.device,
            progress=progress,
        )


def _history(
    result: FitResult, train_examples: int, train_config: TrainConfig, config: ClassifierConfig
) -> dict[str, Any]:
    """The history.json document of the first seed's run."""
    return {
        "train_loss": result.history.train_loss,
        "epoch_train_loss": result.history.epoch_train_loss,
        "steps_per_epoch": -(-train_examples // train_config.batch_size),
        "epochs": train_config.epochs,
        "batch_size": train_config.batch_size,
        "seed": config.seeds[0],
        "diverged": result.diverged,
    }


def _refuse_divergence(
    runs: list[tuple[Any, FitResult]], name: str, lr: float, seeds: tuple[int, ...]
) -> None:
    """A ``FashionLabError`` for the first seed whose retrain diverged (no test on NaN)."""
    for seed, (_, run) in zip(seeds, runs, strict=True):
        if run.diverged:
            raise FashionLabError(
                f"retraining {name} with lr {lr:g} and seed {seed} "
                f"diverged after {run.steps} steps; lower the learning rate"
            )


def _summary(
    config: ClassifierConfig,
    params: dict[str, Any],
    runs: list[tuple[Any, FitResult]],
    train_config: TrainConfig,
    *,
    tested: tuple[list[float], list[float], int],
    last: tuple[list[float], int],
    train_examples: int,
    figures: list[Path],
) -> dict[str, Any]:
    """The test.json document (without ``seconds``), also the checkpoint's metrics."""
    model, result = runs[0]
    losses, accuracies, test_examples = tested
    last_losses, first_step = last
    return {
        "schema_version": 2,
        "label": config.label,
        "model_name": model_name(model.config),
        "test_accuracy": _mean(accuracies),
        "test_accuracy_std": _std(accuracies),
        "test_loss": _mean(losses),
        "seeds": list(config.seeds),
        "test_accuracies": accuracies,
        "test_losses": losses,
        "test_examples": test_examples,
        "last20_losses": last_losses,
        "last20_steps": list(range(first_step, first_step + len(last_losses))),
        "last20_seed": config.seeds[0],
        "final_train_loss": result.history.epoch_train_loss[-1],
        "params": params,
        "model": model.config,
        "train": train_config.to_dict(),
        "train_examples": train_examples,
        "epochs": train_config.epochs,
        "steps": result.steps,
        "diverged": False,
        "seconds_train": sum(run.seconds for _, run in runs),
        "checkpoint": "model.pt",
        "figures": [p.name for p in figures],
    }


def _ablation(
    out_dir: Path,
    best_params: dict[str, Any],
    params: dict[str, Any],
    epochs: int,
    config: ClassifierConfig,
    data_dir: str | os.PathLike[str] | None,
) -> None:
    """The ablation beside the retrain (it reuses the study's run of the pick when given one)."""
    from .ablation import run_ablation

    study = best_params if {"config", "seed", "val_acc"} <= set(best_params) else None
    run_ablation(
        out_dir,
        params | {"epochs": epochs},
        seeds=config.seeds[:1],
        max_train=config.max_train,
        device=config.device,
        threads=config.threads,
        data_dir=data_dir,
        study=study,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    """The sample standard deviation (n - 1); 0 for one value."""
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def format_last_iterations(test: dict[str, Any]) -> str:
    """The terminal lines: the last training losses with their step numbers, then the test
    accuracy."""
    lines = [
        f"{test['label']} ({test['model_name']}): training loss of the last "
        f"{len(test['last20_losses'])} SGD iterations"
    ]
    lines += [
        f"  step {step:6d}  loss {loss:.4f}"
        for step, loss in zip(test["last20_steps"], test["last20_losses"], strict=True)
    ]
    accuracies = test.get("test_accuracies") or [test["test_accuracy"]]
    seed = test.get("last20_seed", test.get("seeds", [0])[0])
    lines.append(
        f"test accuracy, seed {seed} (these iterations): {100 * accuracies[0]:.2f}%  "
        f"({test['test_examples']} test images, trained on {test['train_examples']} for "
        f"{test['epochs']} epochs)"
    )
    if len(accuracies) > 1:
        lines.append(f"test accuracy over {len(accuracies)} seeds (mean ± std): {_mean_std(test)}")
    return "\n".join(lines)


def format_side_by_side(tests: dict[str, dict[str, Any]]) -> str:
    """Test accuracies of several retrained models (label -> test.json) as an aligned table."""
    lines = [
        f"{'model':<10} {'architecture':<36} {'test accuracy':>13} {'test loss':>9} {'epochs':>6}"
    ]
    for label, test in tests.items():
        lines.append(
            f"{label:<10} {test['model_name']:<36} {_mean_std(test):>13} "
            f"{test['test_loss']:>9.4f} {test['epochs']:>6}"
        )
    return "\n".join(lines)


def _mean_std(test: dict[str, Any]) -> str:
    """``89.12 ± 0.10%`` (mean ± std over the seeds), or ``89.12%`` for one seed."""
    seeds = len(test.get("seeds", [0]))
    if seeds < 2:
        return f"{100 * test['test_accuracy']:.2f}%"
    return f"{100 * test['test_accuracy']:.2f} ± {100 * test['test_accuracy_std']:.2f}%"


def plot_last_iterations(
    out_dir: str | os.PathLike[str],
    losses: list[float],
    first_step: int,
    test_accuracy: float,
    model_label: str,
    label: str = "plain",
    *,
    seed: int | None = None,
) -> list[Path]:
    """Draw the last training losses (one point per SGD iteration) with the test accuracy on the
    figure (of the run these losses come from: ``seed``, named in the title if given).

    Returns:
        The paths of last20.png and last20.pdf.
    """
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    steps = list(range(first_step, first_step + len(losses)))
    mean = sum(losses) / len(losses)
    with print_style():  # drawn at the size the report prints it
        fig, ax = plt.subplots(figsize=(0.85 * PRINT_WIDTH_IN, 2.7))
        try:
            ax.plot(steps, losses, marker="o", lw=1.0, ms=3, color="tab:blue", label="minibatch")
            ax.axhline(mean, color="tab:gray", ls="--", lw=0.9, label=f"mean {mean:.3f}")
            ax.set_xlabel("SGD iteration (minibatch)")
            ax.set_ylabel(r"training loss $f_{\mathrm{CE}}$", fontsize=MATH_PT)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            # Legend beside the axes and the test accuracy in the title: nothing hides a point.
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
            ax.set_title(
                f"{label}: last {len(losses)} SGD iterations of {model_label}\n"
                + ("test accuracy" if seed is None else f"seed {seed}: test accuracy")
                + f" {100 * test_accuracy:.2f}%"
            )
            fig.tight_layout()
        except BaseException:
            plt.close(fig)
            raise
        return save_figure(fig, Path(out_dir) / "last20", bbox_inches=None)


def config_dict(config: ClassifierConfig) -> dict[str, Any]:
    """The config as a plain dict (saved next to results by callers)."""
    return asdict(config)
