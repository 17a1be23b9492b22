"""Minibatch SGD for any classifier, with L2 on the weight matrices only.

The objective is f_CE(theta) + (l2 / 2) * sum_W ||W||_F^2 over the weight *matrices*
(every parameter with two or more dimensions). Biases, BatchNorm scales/shifts and PReLU
slopes are not penalised. The penalty enters as its gradient l2 * W, added to the matrices'
gradients before the momentum update (:class:`SGD`, equal to ``torch.optim.SGD`` with weight
decay on that parameter group). The reported training loss is always the unregularised
cross-entropy f_CE. A loss that becomes NaN/inf ends the run as ``diverged`` instead of raising.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._interrupts import check as check_interrupt
from .canonical import Canonical
from .data import FastLoader, Split
from .errors import ConfigError
from .runtime import eval_mode, resolve_device, seed_everything
from .validation import check_int, check_seed, is_number

__all__ = [
    "TrainConfig",
    "History",
    "FitResult",
    "SGD",
    "EpochLoss",
    "fit_module",
    "train_epochs",
    "evaluate",
    "make_optimizer",
    "penalised_parameters",
    "decay_epochs",
]

logger = logging.getLogger(__name__)

StepHook = Callable[[int, float, nn.Module, float], None]
EpochHook = Callable[[int, float, float], None]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig(Canonical):
    """SGD settings.

    ``schedule``: ``constant``; ``cosine`` decay to 0 over all steps; or ``wsd``
    (warmup-free warmup-stable-decay): the constant ``lr`` for the first
    ``epochs - decay_epochs(epochs, decay)`` epochs, then linear decay to 0 over the rest. A WSD run
    of r epochs is a constant-lr run forked at an epoch boundary, which is what lets the tuner
    (``experiments.classifier.tuning.rungs``) score several lengths with one stable trunk.
    ``decay``: the fraction of the epochs that the ``wsd`` schedule decays over.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.0
    nesterov: bool = False
    l2: float = 0.0
    schedule: Literal["constant", "cosine", "wsd"] = "constant"
    seed: int = 0
    decay: float = 0.2

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1)
        check_int("batch size", self.batch_size, 1)
        if not (is_number(self.lr, finite=True) and self.lr > 0):
            raise ConfigError(f"learning rate must be a finite number > 0, got {self.lr!r}")
        if not (is_number(self.momentum, finite=True) and 0.0 <= self.momentum < 1.0):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov=True needs momentum > 0")
        if not (is_number(self.l2, finite=True) and self.l2 >= 0):
            raise ConfigError(f"l2 must be a finite number >= 0, got {self.l2!r}")
        if self.schedule not in ("constant", "cosine", "wsd"):
            raise ConfigError(
                f"schedule must be 'constant', 'cosine' or 'wsd', got {self.schedule!r}"
            )
        if not (is_number(self.decay, finite=True) and 0.0 < self.decay <= 1.0):
            raise ConfigError(f"decay must be a fraction in (0, 1], got {self.decay!r}")
        check_seed("seed", self.seed)


@dataclass
class History:
    """``train_loss``: f_CE of each minibatch; ``val_*`` and ``epoch_train_loss``: per epoch."""

    train_loss: list[float] = field(default_factory=list)
    epoch_train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)


@dataclass
class FitResult:
    history: History
    diverged: bool
    steps: int
    seconds: float


def penalised_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (weight matrices, everything else) for L2."""
    matrices, others = [], []
    for p in model.parameters():
        (matrices if p.ndim >= 2 else others).append(p)
    return matrices, others


class SGD:
    """Minibatch SGD with (Nesterov) momentum and L2 on the weight matrices, in PyTorch's
    convention.

    With g = grad f_CE + l2 * W (matrices) or grad f_CE (everything else)::

        v <- momentum * v + g     (v = g on the first step)
        theta <- theta - lr * (g + momentum * v if nesterov else v)

    This is ``torch.optim.SGD`` with per-group weight decay (tests compare the two, and fit with a
    hand computation); written out because the first use of any ``torch.optim`` optimizer imports
    ``torch._dynamo``, a heavy import that every worker process would pay again.
    Parameters without a gradient are left alone, as torch.optim does.
    """

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        matrices, others = penalised_parameters(model)
        self.params = matrices + others
        self.penalised = len(matrices)
        self.lr, self.momentum, self.nesterov, self.l2 = (
            config.lr,
            config.momentum,
            config.nesterov,
            config.l2,
        )
        self.velocity: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not index:  # torch._foreach_* refuse empty lists
            return
        params = [self.params[i] for i in index]
        grads = [p.grad for p in params]
        penalised = [k for k, i in enumerate(index) if i < self.penalised]
        if self.l2 and penalised:
            decayed = torch._foreach_add(
                [grads[k] for k in penalised], [params[k] for k in penalised], alpha=self.l2
            )
            for k, g in zip(penalised, decayed, strict=True):
                grads[k] = g
        if self.momentum:
            velocity = []
            for k, i in enumerate(index):
                if self.velocity[i] is None:
                    self.velocity[i] = grads[k].clone()
                else:
                    self.velocity[i].mul_(self.momentum).add_(grads[k])
                velocity.append(self.velocity[i])
            grads = (
                torch._foreach_add(grads, velocity, alpha=self.momentum)
                if self.nesterov
                else velocity
            )
        torch._foreach_add_(params, grads, alpha=-self.lr)


def make_optimizer(model: nn.Module, config: TrainConfig) -> SGD:
    """The :class:`SGD` of ``config`` over ``model``'s parameters (L2 on weight matrices only)."""
    return SGD(model, config)


def decay_epochs(epochs: int, decay: float) -> int:
    """Epochs at the end of a ``wsd`` run of ``epochs`` epochs whose lr decays (at least one)."""
    return min(epochs, max(1, round(decay * epochs)))


def _learning_rate(config: TrainConfig, done: int, total: int) -> float:
    """lr for the step after ``done`` steps: constant, cosine to 0 (Loshchilov & Hutter 2017), or
    warmup-stable-decay: constant, then linear to 0 over the last :func:`decay_epochs` epochs
    (Hu et al. 2024, MiniCPM; Hägele et al. 2024)."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * done / total))
    if config.schedule == "wsd":
        per_epoch = total // config.epochs
        decay_steps = decay_epochs(config.epochs, config.decay) * per_epoch
        stable = total - decay_steps
        if done < stable:
            return config.lr
        return config.lr * (1 - (done - stable) / decay_steps)
    return config.lr


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, device: str | torch.device = "cpu", batch_size: int = 4096
) -> tuple[float, float]:
    """Mean f_CE and accuracy of ``model`` on ``split`` in eval mode (no dropout, BN running
    stats)."""
    device = resolve_device(device)
    total_loss, correct = 0.0, 0
    with eval_mode(model):
        for x, y in FastLoader(split, batch_size, shuffle=False, device=device):
            logits = model(x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return total_loss / len(split), correct / len(split)


@dataclass
class EpochLoss:
    """The training losses of one epoch: ``mean`` over minibatches, ``per_example`` weighted by
    size."""

    epoch: int
    mean: float
    per_example: float
    seconds: float


def train_epochs(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: Any,
    epochs: int,
    loss_fn: LossFn,
    *,
    lr_at: Callable[[int], float] | None = None,
    on_step: StepHook | None = None,
    after_epoch: Callable[[EpochLoss], bool] | None = None,
    bar: Any = None,
    steps_per_epoch: int | None = None,
) -> tuple[bool, int]:
    """The one minibatch loop of the project (the classifier's SGD and the autoencoder's Adam).

    Each step: ``loss = loss_fn(model, x, y)``; a NaN/inf loss stops training as diverged before it
    touches the weights; then ``zero_grad``, ``backward``, the learning rate ``lr_at(step)`` (if
    given, set as ``optimizer.lr``) and ``step``. After every epoch ``after_epoch`` gets the epoch's
    losses and returns True to stop (a diverged validation loss, say); it may also raise (pruning).

    Returns:
        ``(diverged, steps)``.
    """
    step, diverged = 0, False
    for epoch in range(1, epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        loss_sum, weighted_sum, count, seen = 0.0, 0.0, 0, 0
        for x, y in batches:
            check_interrupt()  # a Ctrl-C that a finaliser swallowed stops here
            loss = loss_fn(model, x, y)
            value = loss.detach().item()
            if not math.isfinite(value):
                diverged = True
                logger.warning(
                    "loss became %s at step %d: stopping this run as diverged", value, step + 1
                )
                break
            optimizer.zero_grad()
            loss.backward()
            if lr_at is not None:
                optimizer.lr = lr_at(step)
            optimizer.step()
            step += 1
            loss_sum += value
            weighted_sum += value * x.shape[0]
            count += 1
            seen += x.shape[0]
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(step, step / (steps_per_epoch or count), model, value)
        if diverged:
            break
        stats = EpochLoss(
            epoch, loss_sum / count, weighted_sum / seen, time.perf_counter() - epoch_start
        )
        if after_epoch is not None and after_epoch(stats):
            diverged = True
            break
    return diverged, step


def fit_module(
    model: nn.Module,
    train: Split,
    config: TrainConfig,
    *,
    val: Split | None = None,
    device: str | torch.device = "cpu",
    on_step: StepHook | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``model`` with minibatch SGD on ``train``, one module through autograd and
    :class:`SGD`: the loop for classifiers that are not an ``MLP`` (an ``MLP`` trains through
    :func:`fashionlab.population.fit`, which gives the same floats).

    Args:
        model: any module mapping (B, 784) floats to (B, C) logits.
        train: training examples; batches come from :class:`FastLoader` seeded with ``config.seed``.
        config: the SGD settings.
        val: if given, validation loss and accuracy are recorded after every epoch.
        device: where to train.
        on_step: ``on_step(step, epoch_fraction, model, loss)`` after every SGD step, and once
            with step 0 (loss NaN) before the first — the hook for trajectory snapshots.
        on_epoch: ``on_epoch(epoch, val_acc, val_loss)`` after each epoch (with ``val``); it may
            raise (e.g. ``optuna.TrialPruned``) to stop training.
        progress: show a tqdm bar over the minibatches.

    Returns:
        ``FitResult``; ``diverged`` is True if a loss became NaN/inf (training stops there,
        the model keeps its last parameters).

    Raises:
        ConfigError: the batch size exceeds the number of training examples.
    """
    from tqdm.auto import tqdm

    _check_batch_size(config.batch_size, len(train))
    device = resolve_device(device)
    seed_everything(config.seed)  # dropout masks come from the global generator
    model.to(device)
    loader = _shuffled_loader(train, config, device)
    optimizer = make_optimizer(model, config)
    total_steps = config.epochs * len(loader)
    history = History()
    start = time.perf_counter()
    if on_step is not None:
        on_step(0, 0.0, model, float("nan"))

    def step_hook(step: int, epochs_done: float, model: nn.Module, loss: float) -> None:
        history.train_loss.append(loss)
        if on_step is not None:
            on_step(step, epochs_done, model, loss)

    def after_epoch(epoch: EpochLoss) -> bool:
        history.epoch_train_loss.append(epoch.mean)
        line = f"epoch {epoch.epoch:3d}/{config.epochs}  train_loss {epoch.mean:.4f}"
        stop = False
        if val is not None:
            line += _validate(model, val, device, history)
            stop = not math.isfinite(history.val_loss[-1])
        logger.info(line)
        bar.set_postfix_str(line.split("  ", 1)[1])
        if not stop and on_epoch is not None and val is not None:
            on_epoch(epoch.epoch, history.val_acc[-1], history.val_loss[-1])
        return stop

    with tqdm(total=total_steps, disable=not progress, unit="step", leave=False) as bar:
        diverged, step = train_epochs(
            model,
            loader,
            optimizer,
            config.epochs,
            _cross_entropy,
            lr_at=lambda done: _learning_rate(config, done, total_steps),
            on_step=step_hook,
            after_epoch=after_epoch,
            bar=bar,
            steps_per_epoch=len(loader),
        )
    return FitResult(history, diverged, step, time.perf_counter() - start)


def _check_batch_size(batch_size: int, examples: int) -> None:
    if batch_size > examples:
        raise ConfigError(
            f"batch size {batch_size} is larger than the training set ({examples} "
            f"examples); lower the batch size or train on more examples"
        )


def _shuffled_loader(train: Split, config: TrainConfig, device: torch.device) -> FastLoader:
    """The training minibatches, reshuffled each epoch from ``config.seed``."""
    # A last minibatch of one example breaks BatchNorm in training mode (one value per channel);
    # dropping that one example per epoch (a different one each epoch) costs nothing.
    drop_last = len(train) % config.batch_size == 1
    return FastLoader(
        train, config.batch_size, shuffle=True, seed=config.seed, device=device, drop_last=drop_last
    )


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _validate(model: nn.Module, val: Split, device: torch.device, history: History) -> str:
    """Record the validation loss and accuracy in ``history``; their text for the epoch's line."""
    val_loss, val_acc = evaluate(model, val, device)
    history.val_loss.append(val_loss)
    history.val_acc.append(val_acc)
    return f"  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
