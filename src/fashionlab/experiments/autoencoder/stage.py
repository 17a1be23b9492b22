"""The autoencoder stage: train, checkpoint, figures, latent analysis, probes, metrics.json.

File formats: ``docs/run-directory.md`` (``autoencoder/``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...atomic import atomic_write_json
from ...checkpoint import load_model, save_checkpoint
from ...data import Split, load_test, load_train
from ...models import Autoencoder
from ...runtime import Stopwatch, resolve_device, seed_everything
from .config import AutoencoderConfig
from .data import make_loaders
from .train import (
    AutoencoderFit,
    AutoencoderHistory,
    encode_split,
    reconstruction_errors,
    train_autoencoder,
)

__all__ = ["AutoencoderRun", "load_autoencoder", "run_autoencoder", "MODEL_FILE", "METRICS_FILE"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"


def load_autoencoder(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> Autoencoder:
    """Load an autoencoder checkpoint in eval mode; another kind is a ``CheckpointError``."""
    return load_model(path, expect_kind="autoencoder", device=device)  # type: ignore[return-value]


@dataclass(frozen=True)
class AutoencoderRun:
    """What :func:`run_autoencoder` computed and wrote."""

    model: Autoencoder
    history: AutoencoderHistory
    metrics: dict[str, Any]
    files: tuple[Path, ...]
    seconds: float


def run_autoencoder(
    out_dir: str | os.PathLike[str],
    config: AutoencoderConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
) -> AutoencoderRun:
    """The autoencoder stage: train, checkpoint, figures, latent analysis, probes, metrics.json.

    Args:
        out_dir: stage directory (e.g. ``runs/NAME/autoencoder``); the only place files are written.
        config: ``AutoencoderConfig`` (the assignment's defaults when None).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or a ``torch.device``.
        progress: show tqdm bars.
        data_dir: where the Fashion-MNIST files are (see ``fashionlab.data``).

    Returns:
        ``AutoencoderRun`` with the model, history, metrics (the metrics.json document) and files.

    Raises:
        ConfigError: an image index outside the test set (before training), or a bad device.
    """
    from . import analysis  # matplotlib / sklearn only when the stage runs

    config = config or AutoencoderConfig()
    device = resolve_device(device)
    out_dir = Path(out_dir)
    with Stopwatch() as watch:
        train, test = load_train(data_dir), load_test(data_dir)
        shown = analysis.choose_images(test.labels, config.images)  # checks indices before training
        train_size = min(config.train_size or len(train), len(train))
        model, fit = _fit(config, train, test, train_size, device, progress, data_dir)
        files = [atomic_write_json(out_dir / HISTORY_FILE, fit.history.to_dict())]
        errors, labels = reconstruction_errors(model, test, device)
        files.append(_save_model(out_dir, model, fit, config, test_mse=float(errors.mean())))
        images, figure_files = analysis.reconstruction_figure(
            model, test, shown, errors, out_dir, device=device
        )
        codes = encode_split(model, test, device)
        (latent, latent_files), probe = _analyse_codes(
            model, codes, train, test, out_dir, config, device
        )
        files += [*figure_files, *latent_files]
        metrics = _metrics(
            model,
            fit,
            config,
            errors=(errors, labels),
            codes=codes,
            probe=probe,
            pca_mse=analysis.pca_reconstruction_mse(
                train.tensors()[0], test.tensors()[0], model.code_units
            ),
            shown={"images": images, "latent_map": latent},
            files=(figure_files, latent_files),
            train_size=train_size,
            device=device,
        )
    metrics["seconds"] = watch.seconds
    files.append(atomic_write_json(out_dir / METRICS_FILE, metrics))
    logger.info(
        "autoencoder: test MSE %.5f, probe accuracy codes %.4f / pixels %.4f; wrote %s in %.1f s",
        metrics["test_mse"],
        probe["code_accuracy"],
        probe["pixel_accuracy"],
        out_dir,
        watch.seconds,
    )
    return AutoencoderRun(model, fit.history, metrics, tuple(files), watch.seconds)


def _fit(
    config: AutoencoderConfig,
    train: Split,
    test: Split,
    train_size: int,
    device: torch.device,
    progress: bool,
    data_dir: str | os.PathLike[str] | None,
) -> tuple[Autoencoder, AutoencoderFit]:
    """The loaders, the seeded initial weights and the training run."""
    train_batches, test_batches = make_loaders(
        config, train, test, device=device, data_dir=data_dir
    )
    seed_everything(config.seed)  # the initial weights
    model = Autoencoder().to(device)
    logger.info(
        "autoencoder %s: %d epochs, batch %d, Adam lr %g, %s loader, %d training images",
        "784-128-64-128-784",
        config.epochs,
        config.batch_size,
        config.lr,
        config.loader,
        train_size,
    )
    fit = train_autoencoder(
        model,
        train_batches,
        config,
        test_batches=test_batches,
        device=device,
        progress=progress,
    )
    return model, fit


def _analyse_codes(
    model: Autoencoder,
    codes: torch.Tensor,
    train: Split,
    test: Split,
    out_dir: Path,
    config: AutoencoderConfig,
    device: torch.device,
) -> tuple[tuple[dict[str, Any], list[Path]], dict[str, Any]]:
    """The latent map of the test codes (entry, files) and the linear probes."""
    from . import analysis

    latent = analysis.latent_map(
        codes,
        test.labels,
        out_dir,
        method=config.latent_map,
        points=config.latent_points,
        seed=config.seed,
    )
    probe = analysis.linear_probes(
        model,
        train,
        test,
        test_codes=codes,
        train_size=config.probe_train_size,
        max_iter=config.probe_max_iter,
        seed=config.seed,
        device=device,
    )
    return latent, probe


def _save_model(
    out_dir: Path,
    model: Autoencoder,
    fit: AutoencoderFit,
    config: AutoencoderConfig,
    *,
    test_mse: float,
) -> Path:
    """model.pt with the test MSE, the number of epochs and the training settings."""
    return save_checkpoint(
        out_dir / MODEL_FILE,
        model,
        kind="autoencoder",
        config=model.config,
        metrics={
            "test_mse": test_mse,
            "epochs": len(fit.history.epoch),
            "training": config.to_dict(),
        },
    )


def _metrics(
    model: Autoencoder,
    fit: AutoencoderFit,
    config: AutoencoderConfig,
    *,
    errors: tuple[torch.Tensor, torch.Tensor],
    codes: torch.Tensor,
    probe: dict[str, Any],
    pca_mse: float,
    shown: dict[str, Any],
    files: tuple[list[Path], list[Path]],
    train_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """The metrics.json document (without ``seconds``): ``errors`` are the per-image test
    errors and their labels, ``shown`` the reconstruction and latent-map entries."""
    from . import analysis

    figure_files, latent_files = files
    active = (codes > 0).sum(1).double()
    return {
        "schema_version": 1,
        "test_mse": float(errors[0].mean()),
        "train_mse": fit.history.train_mse[-1] if fit.history.train_mse else None,
        "per_class_mse": analysis.per_class_mse(*errors),
        "pca_test_mse": {"components": model.code_units, "mse": pca_mse},
        "probe_code_accuracy": probe["code_accuracy"],
        "probe_pixel_accuracy": probe["pixel_accuracy"],
        "probe": {k: v for k, v in probe.items() if k not in ("code_accuracy", "pixel_accuracy")},
        "images": shown["images"],
        "latent_map": shown["latent_map"],
        "code_units": {
            "total": model.code_units,
            "dead": int((codes.amax(0) <= 0).sum()),
            "mean_active": float(active.mean()),
        },
        "epochs": len(fit.history.epoch),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "train_size": train_size,
        "loader": config.loader,
        "device": str(device),
        "diverged": fit.diverged,
        "train_seconds": fit.seconds,
        "seconds_per_epoch": fit.seconds / max(1, len(fit.history.epoch)),
        "config": config.to_dict(),
        "figures": {
            "reconstructions": [p.name for p in figure_files],
            "latent_map": [p.name for p in latent_files if p.suffix != ".npz"],
        },
    }
