"""A dense autoencoder 784-128-64-128-784 on Fashion-MNIST, trained with Adam on the MSE.

The architecture, loss and optimizer are the assignment's: ``encoder`` = Linear(784, 128), ReLU,
Linear(128, 64), ReLU (the 64-dimensional code); ``decoder`` = Linear(64, 128), ReLU,
Linear(128, 784), Sigmoid (pixels in [0, 1], like ``ToTensor()``); ``nn.MSELoss`` (mean over all
pixels of the batch) and ``torch.optim.Adam``. Each step flattens the batch to 784 values, runs
forward, loss, ``zero_grad``, ``backward``, ``step``.

Two interchangeable data paths feed the same loop: the fast in-memory :class:`~fashionlab.data.FastLoader`
(default) and the textbook ``DataLoader(torchvision.datasets.FashionMNIST(transform=ToTensor()))``
(``loader="textbook"``). They serve bit-identical tensors; with the same seed the initial weights
are identical, but the shuffling orders differ (the DataLoader draws its own permutation).

Default batch size 32, Adam lr 1e-3 (the assignment's). Chosen on a 50,000 / 10,000 train/validation
split of the training set (seed 0, 20 epochs; never on the test set). Validation MSE after 20 epochs:
batch 64 / lr 1e-3 0.00934, batch 64 / lr 2e-3 0.00923, batch 32 / lr 2e-3 0.00919, batch 32 / lr 1e-3
0.00885, batch 32 / lr 7e-4 0.00869. Halving the batch doubles the Adam steps of 20 epochs and helps
most; lr 7e-4 vs 1e-3 is within the epoch-to-epoch noise (about 1e-4), so lr stays at 1e-3. Trained on
all 60,000 images this gives test MSE 0.0083 (the issue quotes ~0.0089 for batch 64), for ~1.5x the
time per epoch.

Files written by :func:`run_autoencoder` into its stage directory (read by the report)::

    model.pt              checkpoint (kind "autoencoder"); load with
                          ``fashionlab.checkpoint.load_model(path, expect_kind="autoencoder")``
    history.json          {"epoch": [1..E], "train_mse": [...], "test_mse": [...],
                           "epoch_seconds": [...]}: train_mse is the mean minibatch loss during the
                          epoch (weighted by batch size), test_mse the MSE on the whole test set
                          after the epoch (eval mode); epoch_seconds the wall time of each epoch
                          (training + test evaluation)
    reconstructions.png/.pdf  two test images (top row, "Original") above their reconstructions
                          (bottom row, "Reconstruction"), each titled with its class name
    latent_map.png/.pdf   2-D map (PCA or t-SNE) of the 64-d codes of the test set, coloured by class
    latent_map.npz        xy (N, 2) float32 map coordinates, labels (N,) int64 classes,
                          index (N,) int64 positions in the test set
    metrics.json          schema_version 1, with
        test_mse               MSE of the final model over all 10,000 test images and 784 pixels
        train_mse              the last epoch's train_mse (history)
        per_class_mse          {class name (fashionlab.data.CLASSES): test MSE of that class}
        probe_code_accuracy    test accuracy of a logistic regression on the 64-d codes
        probe_pixel_accuracy   test accuracy of a logistic regression on the 784 raw pixels
        probe                  {train_size, test_size, max_iter, code_train_accuracy,
                                pixel_train_accuracy, code_converged, pixel_converged,
                                code_seconds, pixel_seconds}: both probes are StandardScaler +
                                LogisticRegression (lbfgs), fit on the same stratified subset of
                                train_size training images, scored on the whole test set
        images                 [{index, label, class, mse}, ...] the two test images shown
        latent_map             {method: "pca" | "tsne", points, explained_variance_ratio
                                ([pc1, pc2] for PCA, null for t-SNE)}
        code_units             {total: 64, dead: code units that are 0 on every test image,
                                mean_active: mean number of non-zero units per test image}
        epochs, batch_size, lr, seed, train_size (training images used), loader ("fast" |
        "textbook"), device, diverged (bool)
        train_seconds          wall time of the training loop (incl. per-epoch test MSE)
        seconds_per_epoch      train_seconds / epochs
        seconds                wall time of the whole stage
        config                 the AutoencoderConfig fields
        figures                {"reconstructions": [png, pdf], "latent_map": [png, pdf]}
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .data import FastLoader, Split, load_test, load_train, stratified_split, torchvision_dataset
from .errors import ConfigError
from .utils import Stopwatch, atomic_write_json, resolve_device, seed_everything
from .validation import ALL, check_count

__all__ = [
    "Autoencoder", "AutoencoderConfig", "AutoencoderHistory", "AutoencoderFit", "AutoencoderRun",
    "build_autoencoder", "load_autoencoder", "make_loaders", "textbook_loader", "train_autoencoder",
    "reconstruction_errors", "encode_split", "run_autoencoder",
]

logger = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
LATENT_FILE = "latent_map.npz"


class Autoencoder(nn.Module):
    """Dense autoencoder ``input_dim - hidden_units - code_units - hidden_units - input_dim``.

    Defaults are the assignment's 784-128-64-128-784 with ReLU and a sigmoid output.
    """

    def __init__(self, input_dim: int = 784, hidden_units: int = 128, code_units: int = 64) -> None:
        super().__init__()
        for name, value in (("input_dim", input_dim), ("hidden_units", hidden_units), ("code_units", code_units)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Autoencoder {name} must be an integer >= 1, got {value!r}")
        self.input_dim, self.hidden_units, self.code_units = input_dim, hidden_units, code_units
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_units), nn.ReLU(),
            nn.Linear(hidden_units, code_units), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code_units, hidden_units), nn.ReLU(),
            nn.Linear(hidden_units, input_dim), nn.Sigmoid(),
        )

    @property
    def config(self) -> dict[str, int]:
        """The keyword arguments that rebuild this architecture (stored in checkpoints)."""
        return {"input_dim": self.input_dim, "hidden_units": self.hidden_units, "code_units": self.code_units}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) pixels -> (B, code_units) non-negative codes."""
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """(B, code_units) codes -> (B, input_dim) pixels in (0, 1)."""
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) -> (B, input_dim) reconstruction."""
        return self.decoder(self.encoder(x))


def build_autoencoder(config: dict[str, Any]) -> Autoencoder:
    """Rebuild an :class:`Autoencoder` from its ``config`` dict (the checkpoint builder).

    Raises:
        ConfigError: ``config`` does not describe an autoencoder (e.g. an MLP config).
    """
    try:
        return Autoencoder(**config)
    except TypeError as exc:
        raise ConfigError(f"not an autoencoder config: {config} ({exc}); expected keys "
                          f"input_dim, hidden_units, code_units") from exc


def load_autoencoder(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Autoencoder:
    """Load an autoencoder checkpoint in eval mode; a checkpoint of another kind is a ``CheckpointError``."""
    from .checkpoint import load_model

    return load_model(path, expect_kind="autoencoder", device=device)  # type: ignore[return-value]


@dataclass(frozen=True)
class AutoencoderConfig:
    """Settings of the autoencoder stage (defaults: the assignment; ~2 min on 2 otherwise idle CPU cores).

    ``train_size``: a stratified subset of the training images (None = all 60,000).
    ``loader``: "fast" (in-memory FastLoader) or "textbook" (torchvision dataset + DataLoader).
    ``images``: the two test-set indices shown in the reconstruction figure (None = the first
    test image and the next one of another class). ``latent_points``: test codes on the map
    (None = all for PCA, 3,000 for t-SNE). ``probe_train_size``: training images the linear
    probes are fit on (None = all 60,000: several times slower; the pixel probe on 10,000 takes ~15 s).
    """

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    train_size: int | None = field(default=None, metadata=ALL)
    loader: Literal["fast", "textbook"] = "fast"
    num_workers: int = 0
    images: tuple[int, int] | None = None
    latent_map: Literal["pca", "tsne"] = "pca"
    latent_points: int | None = None
    probe_train_size: int | None = field(default=10_000, metadata=ALL)
    probe_max_iter: int = 1000

    def __post_init__(self) -> None:
        def integer(name: str, low: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"AutoencoderConfig.{name} (--{name.replace('_', '-')}) must be an integer "
                                  f">= {low}{' or None' if optional else ''}, got {value!r}")

        integer("epochs", 1)
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
                and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"AutoencoderConfig.lr (--lr, the Adam learning rate) must be a finite number > 0, "
                              f"got {self.lr!r}; the assignment uses 1e-3")
        integer("batch_size", 1)
        integer("seed", 0)
        check_count("train_size", self.train_size, 100)
        integer("num_workers", 0)
        integer("latent_points", 10, optional=True)
        check_count("probe_train_size", self.probe_train_size, 100)
        integer("probe_max_iter", 1)
        if self.train_size is not None and self.batch_size > self.train_size:
            raise ConfigError(f"batch size {self.batch_size} exceeds train_size {self.train_size}; "
                              f"lower --batch-size or raise the training subset")
        if self.loader not in ("fast", "textbook"):
            raise ConfigError(f"AutoencoderConfig.loader must be 'fast' or 'textbook', got {self.loader!r}")
        if self.latent_map not in ("pca", "tsne"):
            raise ConfigError(f"latent map must be 'pca' or 'tsne', got {self.latent_map!r}")
        if self.images is not None:
            images = tuple(self.images)
            if (len(images) != 2 or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in images)
                    or images[0] == images[1]):
                raise ConfigError(f"images must be two different non-negative test-set indices, got {self.images!r}; "
                                  f"e.g. --images 0 1")
            object.__setattr__(self, "images", images)

    @classmethod
    def quick(cls, **overrides: Any) -> AutoencoderConfig:
        """A smoke-test setting (2 epochs on 5,000 images, small probes): a few seconds."""
        settings: dict[str, Any] = {"epochs": 2, "train_size": 5000, "probe_train_size": 2000,
                                    "probe_max_iter": 100}
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AutoencoderHistory:
    """Per-epoch ``train_mse`` (mean minibatch loss), ``test_mse`` (after the epoch) and wall time."""

    epoch: list[int] = field(default_factory=list)
    train_mse: list[float] = field(default_factory=list)
    test_mse: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[Any]]:
        return dataclasses.asdict(self)


@dataclass
class AutoencoderFit:
    """What :func:`train_autoencoder` returns."""

    history: AutoencoderHistory
    diverged: bool
    steps: int
    seconds: float


@dataclass(frozen=True)
class AutoencoderRun:
    """What :func:`run_autoencoder` computed and wrote."""

    model: Autoencoder
    history: AutoencoderHistory
    metrics: dict[str, Any]
    files: tuple[Path, ...]
    seconds: float


# --- data --------------------------------------------------------------------------------------------

def textbook_loader(train: bool, batch_size: int, *, seed: int = 0, shuffle: bool | None = None,
                    indices: torch.Tensor | None = None, num_workers: int = 0,
                    data_dir: str | os.PathLike[str] | None = None) -> torch.utils.data.DataLoader:
    """``DataLoader(torchvision FashionMNIST with ToTensor())``: the textbook data path.

    Args:
        train: the training set (True) or the test set (False).
        batch_size: images per batch.
        seed: seeds the DataLoader's generator (its shuffling order).
        shuffle: default True for the training set, False for the test set.
        indices: keep only these examples (``torch.utils.data.Subset``).
        num_workers: DataLoader worker processes (0: load in the main process).
        data_dir: where the Fashion-MNIST files are (see ``fashionlab.data``).
    """
    from torch.utils.data import DataLoader, Subset

    dataset = torchvision_dataset(train=train, data_dir=data_dir)
    if indices is not None:
        dataset = Subset(dataset, indices.tolist())
    return DataLoader(dataset, batch_size=batch_size, shuffle=train if shuffle is None else shuffle,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def make_loaders(config: AutoencoderConfig, train: Split, test: Split, *, device: str | torch.device = "cpu",
                 data_dir: str | os.PathLike[str] | None = None) -> tuple[Batches, Batches]:
    """The (train, test) batch iterables of ``config.loader``; the training subset if ``train_size``.

    Both paths use the same stratified seeded subset (``Split.subset(train_size, seed)``).
    """
    if config.loader == "textbook":
        indices = None
        if config.train_size is not None and config.train_size < len(train):
            indices, _ = stratified_split(train.labels, len(train) - config.train_size, config.seed)
        return (textbook_loader(True, config.batch_size, seed=config.seed, indices=indices,
                                num_workers=config.num_workers, data_dir=data_dir),
                textbook_loader(False, 1000, num_workers=config.num_workers, data_dir=data_dir))
    if config.train_size is not None:
        train = train.subset(config.train_size, seed=config.seed)
    return (FastLoader(train, config.batch_size, shuffle=True, seed=config.seed, device=device),
            FastLoader(test, 1000, shuffle=False, device=device))


# --- training ----------------------------------------------------------------------------------------

@torch.no_grad()
def reconstruction_errors(model: Autoencoder, batches: Batches | Split,
                          device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image MSE (mean over the 784 pixels) and labels, in eval mode, on the CPU.

    Returns:
        ``(mse (N,) float64, labels (N,) int64)``; their mean over images is the MSELoss of the set.
    """
    device = resolve_device(device)
    if isinstance(batches, Split):
        batches = FastLoader(batches, 1000, shuffle=False, device=device)
    was_training = model.training
    model.eval()
    errors, labels = [], []
    for x, y in batches:
        x = x.to(device).flatten(1)  # (B, 784)
        errors.append((model(x) - x).square().mean(1).double().cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(errors), torch.cat(labels)


@torch.no_grad()
def encode_split(model: Autoencoder, split: Split, device: str | torch.device = "cpu") -> torch.Tensor:
    """The codes (N, code_units) of every image of ``split``, in eval mode, on the CPU."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    codes = [model.encode(x).cpu() for x, _ in FastLoader(split, 1000, shuffle=False, device=device)]
    model.train(was_training)
    return torch.cat(codes)


def train_autoencoder(model: Autoencoder, train_batches: Batches, config: AutoencoderConfig, *,
                      test_batches: Batches | None = None, device: str | torch.device = "cpu",
                      progress: bool = False) -> AutoencoderFit:
    """Train ``model`` to reconstruct its input: ``nn.MSELoss`` + ``torch.optim.Adam(lr=config.lr)``.

    Args:
        model: the autoencoder (moved to ``device``).
        train_batches: re-iterable ``(x, y)`` batches (FastLoader or DataLoader); x is flattened to
            (B, 784), y is ignored.
        config: epochs and learning rate (batch size and seed belong to the loader).
        test_batches: if given, the test MSE is recorded after every epoch.
        device: where to train.
        progress: show a tqdm bar over the minibatches.

    Returns:
        ``AutoencoderFit``; ``diverged`` is True if a loss became NaN/inf (training stops there).
    """
    from tqdm.auto import tqdm

    device = resolve_device(device)
    model.to(device)
    criterion = nn.MSELoss()
    # fused=True is the same Adam update (Kingma & Ba 2015) done in one kernel instead of ~10 small ops per
    # parameter tensor: about 25% faster steps on a CPU for this small model, equal up to float rounding.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda"))
    history = AutoencoderHistory()
    steps_per_epoch = len(train_batches) if hasattr(train_batches, "__len__") else None
    total = steps_per_epoch * config.epochs if steps_per_epoch is not None else None
    step, diverged = 0, False
    start = time.perf_counter()
    with tqdm(total=total, disable=not progress, unit="step", leave=False, desc="autoencoder") as bar:
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            loss_sum, seen = 0.0, 0
            for x, _ in train_batches:
                x = x.to(device, non_blocking=True).view(x.shape[0], -1)  # (B, 1, 28, 28) or (B, 784) -> (B, 784)
                loss = criterion(model(x), x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = loss.item()
                if not math.isfinite(value):
                    diverged = True
                    logger.warning("autoencoder loss became %s at step %d (lr=%g): stopping", value, step + 1,
                                   config.lr)
                    break
                loss_sum += value * x.shape[0]
                seen += x.shape[0]
                step += 1
                bar.update(1)
            if diverged:
                break
            history.epoch.append(epoch)
            history.train_mse.append(loss_sum / seen)
            line = f"epoch {epoch:3d}/{config.epochs}  train_mse {history.train_mse[-1]:.5f}"
            if test_batches is not None:
                errors, _ = reconstruction_errors(model, test_batches, device)
                history.test_mse.append(float(errors.mean()))
                line += f"  test_mse {history.test_mse[-1]:.5f}"
            history.epoch_seconds.append(time.perf_counter() - epoch_start)
            logger.info("%s  (%.1f s)", line, history.epoch_seconds[-1])
            bar.set_postfix_str(line.split("  ", 1)[1])
    return AutoencoderFit(history, diverged, step, time.perf_counter() - start)


# --- the stage ---------------------------------------------------------------------------------------

def run_autoencoder(out_dir: str | os.PathLike[str], config: AutoencoderConfig | None = None, *,
                    device: str | torch.device = "cpu", progress: bool = True,
                    data_dir: str | os.PathLike[str] | None = None) -> AutoencoderRun:
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
    from . import autoencoder_analysis as analysis  # matplotlib / sklearn only when the stage runs

    config = config or AutoencoderConfig()
    device = resolve_device(device)
    out_dir = Path(out_dir)
    with Stopwatch() as watch:
        train, test = load_train(data_dir), load_test(data_dir)
        shown = analysis.choose_images(test.labels, config.images)  # checks indices before training
        train_size = min(config.train_size or len(train), len(train))
        train_batches, test_batches = make_loaders(config, train, test, device=device, data_dir=data_dir)
        seed_everything(config.seed)  # the initial weights
        model = Autoencoder().to(device)
        logger.info("autoencoder %s: %d epochs, batch %d, Adam lr %g, %s loader, %d training images",
                    "784-128-64-128-784", config.epochs, config.batch_size, config.lr, config.loader,
                    train_size)
        fit = train_autoencoder(model, train_batches, config, test_batches=test_batches, device=device,
                                progress=progress)
        files = [atomic_write_json(out_dir / HISTORY_FILE, fit.history.to_dict())]
        errors, labels = reconstruction_errors(model, test, device)
        test_mse = float(errors.mean())
        from .checkpoint import save_checkpoint

        files.append(save_checkpoint(out_dir / MODEL_FILE, model, kind="autoencoder", config=model.config,
                                     metrics={"test_mse": test_mse, "epochs": len(fit.history.epoch),
                                              "training": config.to_dict()}))
        images, figure_files = analysis.reconstruction_figure(model, test, shown, errors, out_dir, device=device)
        codes = encode_split(model, test, device)
        latent, latent_files = analysis.latent_map(codes, test.labels, out_dir, method=config.latent_map,
                                                   points=config.latent_points, seed=config.seed)
        probe = analysis.linear_probes(model, train, test, test_codes=codes, train_size=config.probe_train_size,
                                       max_iter=config.probe_max_iter, seed=config.seed, device=device)
        files += [*figure_files, *latent_files]
        active = (codes > 0).sum(1).double()
        metrics: dict[str, Any] = {
            "schema_version": 1,
            "test_mse": test_mse,
            "train_mse": fit.history.train_mse[-1] if fit.history.train_mse else None,
            "per_class_mse": analysis.per_class_mse(errors, labels),
            "probe_code_accuracy": probe["code_accuracy"],
            "probe_pixel_accuracy": probe["pixel_accuracy"],
            "probe": {k: v for k, v in probe.items() if k not in ("code_accuracy", "pixel_accuracy")},
            "images": images,
            "latent_map": latent,
            "code_units": {"total": model.code_units, "dead": int((codes.amax(0) <= 0).sum()),
                           "mean_active": float(active.mean())},
            "epochs": len(fit.history.epoch), "batch_size": config.batch_size, "lr": config.lr,
            "seed": config.seed, "train_size": train_size, "loader": config.loader,
            "device": str(device), "diverged": fit.diverged,
            "train_seconds": fit.seconds,
            "seconds_per_epoch": fit.seconds / max(1, len(fit.history.epoch)),
            "config": config.to_dict(),
            "figures": {"reconstructions": [p.name for p in figure_files],
                        "latent_map": [p.name for p in latent_files if p.suffix != ".npz"]},
        }
    metrics["seconds"] = watch.seconds
    files.append(atomic_write_json(out_dir / METRICS_FILE, metrics))
    logger.info("autoencoder: test MSE %.5f, probe accuracy codes %.4f / pixels %.4f; wrote %s in %.1f s",
                test_mse, probe["code_accuracy"], probe["pixel_accuracy"], out_dir, watch.seconds)
    return AutoencoderRun(model, fit.history, metrics, tuple(files), watch.seconds)
