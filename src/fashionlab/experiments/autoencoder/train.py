"""Training the autoencoder: ``nn.MSELoss`` and ``torch.optim.Adam`` in the project's one loop."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...data import FastLoader, Split
from ...models import Autoencoder
from ...runtime import eval_mode, resolve_device
from ...train import EpochLoss, train_epochs
from .config import AutoencoderConfig
from .data import Batches

__all__ = [
    "AutoencoderHistory",
    "AutoencoderFit",
    "train_autoencoder",
    "reconstruction_errors",
    "encode_split",
]

logger = logging.getLogger(__name__)


@dataclass
class AutoencoderHistory:
    """Per-epoch ``train_mse`` (mean minibatch loss), ``test_mse`` (after the epoch) and wall
    time."""

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


@torch.no_grad()
def reconstruction_errors(
    model: Autoencoder, batches: Batches | Split, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image MSE (mean over the 784 pixels) and labels, in eval mode, on the CPU.

    Returns:
        ``(mse (N,) float64, labels (N,) int64)``; their mean over images is the MSELoss of the set.
    """
    device = resolve_device(device)
    if isinstance(batches, Split):
        batches = FastLoader(batches, 1000, shuffle=False, device=device)
    errors, labels = [], []
    with eval_mode(model):
        for x, y in batches:
            x = x.to(device).flatten(1)  # (B, 784)
            errors.append((model(x) - x).square().mean(1).double().cpu())
            labels.append(y.cpu())
    return torch.cat(errors), torch.cat(labels)


@torch.no_grad()
def encode_split(
    model: Autoencoder, split: Split, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The codes (N, code_units) of every image of ``split``, in eval mode, on the CPU."""
    device = resolve_device(device)
    with eval_mode(model):
        codes = [
            model.encode(x).cpu() for x, _ in FastLoader(split, 1000, shuffle=False, device=device)
        ]
    return torch.cat(codes)


def train_autoencoder(
    model: Autoencoder,
    train_batches: Batches,
    config: AutoencoderConfig,
    *,
    test_batches: Batches | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> AutoencoderFit:
    """Train ``model`` to reconstruct its input: ``nn.MSELoss`` +
    ``torch.optim.Adam(lr=config.lr)``.

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
    # fused=True: the same Adam update (Kingma & Ba 2015) in one kernel, equal up to rounding
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda")
    )
    history = AutoencoderHistory()
    steps_per_epoch = len(train_batches) if hasattr(train_batches, "__len__") else None
    total = steps_per_epoch * config.epochs if steps_per_epoch is not None else None

    def reconstruction_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True).flatten(1)  # (B, 1, 28, 28) or (B, 784) -> (B, 784)
        return criterion(model(x), x)

    def after_epoch(epoch: EpochLoss) -> bool:
        evaluated = time.perf_counter()
        history.epoch.append(epoch.epoch)
        history.train_mse.append(epoch.per_example)
        line = f"epoch {epoch.epoch:3d}/{config.epochs}  train_mse {epoch.per_example:.5f}"
        if test_batches is not None:
            errors, _ = reconstruction_errors(model, test_batches, device)
            history.test_mse.append(float(errors.mean()))
            line += f"  test_mse {history.test_mse[-1]:.5f}"
        # training + test evaluation
        history.epoch_seconds.append(epoch.seconds + time.perf_counter() - evaluated)
        logger.info("%s  (%.1f s)", line, history.epoch_seconds[-1])
        bar.set_postfix_str(line.split("  ", 1)[1])
        return False

    start = time.perf_counter()
    with tqdm(
        total=total, disable=not progress, unit="step", leave=False, desc="autoencoder"
    ) as bar:
        diverged, steps = train_epochs(
            model,
            train_batches,
            optimizer,
            config.epochs,
            reconstruction_loss,
            after_epoch=after_epoch,
            bar=bar,
            steps_per_epoch=steps_per_epoch,
        )
    return AutoencoderFit(history, diverged, steps, time.perf_counter() - start)
