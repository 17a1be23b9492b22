"""One landscape run's SGD: trained until the loss on its own training subset stops improving,
with a per-step log, a trajectory thinned to the path's shape, and the replay that explains the
largest loss spike on the drawn path.

Training length (chosen on the training subset, never on the test set): after every epoch the
unregularised f_CE on the whole training subset (eval mode) is compared with the best so far. An
epoch that does not lower it by more than ``plateau_tol`` (relative) is a bad epoch; after
``plateau_patience`` bad epochs in a row the learning rate is multiplied by ``lr_decay``, and once
it has been lowered ``lr_decays`` times the next plateau ends training (ReduceLROnPlateau). So SGD
first makes progress at the configured rate, then settles into the bottom of the basin it reached
with a step small enough not to bounce out of it; ``train.epochs`` is only a cap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...batches import FastLoader
from ...data import CLASSES
from ...runtime import seed_everything
from ...train import evaluate, make_optimizer, train_epochs
from .trajectory import Trajectory, TrajectoryRecorder

if TYPE_CHECKING:
    from ...data import Split
    from .config import LandscapeConfig

__all__ = ["RunLog", "train_run", "thin_trajectory", "explain_spike"]


@dataclass(frozen=True, eq=False)
class RunLog:
    """Per SGD step (arrays of length S) and per epoch (length E) records of one run."""

    step: np.ndarray  # 1..S
    lr: np.ndarray  # learning rate of the step
    batch_loss: np.ndarray  # minibatch f_CE before the step
    update_norm: np.ndarray  # ||theta_after - theta_before||
    top_class: np.ndarray  # the most frequent class in the step's minibatch
    top_share: np.ndarray  # its share of the minibatch
    steps_per_epoch: int
    epoch_loss: np.ndarray  # f_CE on the whole training subset after each epoch
    epoch_lr: np.ndarray  # the learning rate of each epoch
    stop_reason: str  # "plateau" | "max_epochs" | "epochs" (no plateau rule)
    diverged: bool

    @property
    def epochs(self) -> int:
        return len(self.epoch_loss)


class _LabelledBatches:
    """The loader, remembering the labels of each minibatch it hands out."""

    def __init__(self, loader: FastLoader) -> None:
        self.loader, self.labels = loader, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            self.labels.append(y)
            yield x, y


def _loader(split: Split, config: LandscapeConfig, device: torch.device) -> FastLoader:
    train = config.train
    # As in fit: a last batch of one example breaks BatchNorm in training mode.
    drop_last = len(split) % train.batch_size == 1
    return FastLoader(
        split, train.batch_size, shuffle=True, seed=train.seed, device=device, drop_last=drop_last
    )


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


class _Schedule:
    """The run's learning rate: cosine when there is no plateau rule and the schedule says so,
    else constant and lowered on plateaus (ReduceLROnPlateau, module docstring)."""

    def __init__(self, config: LandscapeConfig, total: int) -> None:
        self.config, self.total = config, total
        self.lr = config.train.lr
        self.best, self.bad, self.decays, self.stopped = math.inf, 0, 0, False

    def lr_at(self, done: int) -> float:
        train = self.config.train
        if self.config.plateau_tol is None and train.schedule == "cosine":
            return train.lr * 0.5 * (1 + math.cos(math.pi * done / self.total))
        return self.lr

    def stop_after(self, loss: float) -> bool:
        """Take an epoch's subset loss; True when training should stop."""
        config = self.config
        if config.plateau_tol is None:
            return False
        if loss < self.best * (1 - config.plateau_tol):
            self.best, self.bad = loss, 0
            return False
        self.best = min(self.best, loss)
        self.bad += 1
        if self.bad < config.plateau_patience:
            return False
        if self.decays >= config.lr_decays:
            self.stopped = True
            return True
        self.lr *= config.lr_decay
        self.decays += 1
        self.bad = 0
        return False

    @property
    def stop_reason(self) -> str:
        if self.stopped:
            return "plateau"
        return "epochs" if self.config.plateau_tol is None else "max_epochs"


class _StepLog:
    """Per step: (step, lr, minibatch loss, update norm), and the snapshot to the recorder."""

    def __init__(self, model: nn.Module, recorder: TrajectoryRecorder, schedule: _Schedule) -> None:
        self.params = list(model.parameters())
        self.previous = [p.detach().clone() for p in self.params]
        self.recorder, self.schedule = recorder, schedule
        self.steps: list[tuple[int, float, float, float]] = []

    @torch.no_grad()
    def __call__(self, step: int, epoch_fraction: float, model: nn.Module, loss: float) -> None:
        if step > 0:  # ||theta_after - theta_before||, without flattening the parameters
            moves = torch._foreach_sub([p.detach() for p in self.params], self.previous)
            norm = float(torch.stack(torch._foreach_norm(moves)).norm())
            self.steps.append((step, self.schedule.lr_at(step - 1), loss, norm))
            torch._foreach_copy_(self.previous, [p.detach() for p in self.params])
        self.recorder(step, epoch_fraction, model, loss)


def train_run(
    model: nn.Module,
    split: Split,
    config: LandscapeConfig,
    *,
    run: int,
    device: torch.device,
    progress: bool = False,
) -> tuple[Trajectory, RunLog]:
    """Train ``model`` on ``split`` with SGD (module docstring), recording its trajectory.

    Returns:
        The run's snapshots (thinned to ``config.max_snapshots``) and its :class:`RunLog`.
    """
    from tqdm.auto import tqdm

    train = config.train
    seed_everything(train.seed)  # dropout masks; the minibatch order has its own seeded generator
    model.to(device)
    batches = _LabelledBatches(_loader(split, config, device))
    optimizer = make_optimizer(model, train)
    recorder = TrajectoryRecorder(config.snapshots_per_epoch, run=run)
    total = train.epochs * len(batches)
    schedule = _Schedule(config, total)
    on_step = _StepLog(model, recorder, schedule)
    epoch_loss: list[float] = []
    epoch_lr: list[float] = []

    def after_epoch(_: Any) -> bool:
        loss, _accuracy = evaluate(model, split, device)
        epoch_loss.append(loss)
        epoch_lr.append(schedule.lr)
        bar.set_postfix_str(f"subset loss {loss:.4f}  lr {schedule.lr:.3g}")
        return schedule.stop_after(loss)

    on_step(0, 0.0, model, float("nan"))
    with tqdm(total=total, disable=not progress, unit="step", leave=False) as bar:
        diverged, _ = train_epochs(
            model,
            batches,
            optimizer,
            train.epochs,
            _cross_entropy,
            lr_at=schedule.lr_at,
            on_step=on_step,
            after_epoch=after_epoch,
            bar=bar,
            steps_per_epoch=len(batches),
        )
    recorder.finish(model)
    log = _run_log(
        on_step.steps,
        batches,
        (epoch_loss, epoch_lr),
        stop_reason=schedule.stop_reason,
        diverged=diverged and not schedule.stopped,
    )
    return thin_trajectory(recorder.trajectory(), config.max_snapshots), log


def _run_log(
    steps: list[tuple[int, float, float, float]],
    batches: _LabelledBatches,
    epochs: tuple[list[float], list[float]],
    *,
    stop_reason: str,
    diverged: bool,
) -> RunLog:
    """The :class:`RunLog` of the steps taken and the epochs' subset losses and rates."""
    counts = [torch.bincount(y.cpu(), minlength=1) for y in batches.labels[: len(steps)]]
    step, lr, batch_loss, update_norm = (np.array(c) for c in zip(*steps, strict=True))
    return RunLog(
        step=step.astype(np.int64),
        lr=lr,
        batch_loss=batch_loss,
        update_norm=update_norm,
        top_class=np.array([int(c.argmax()) for c in counts], dtype=np.int64),
        top_share=np.array([float(c.max() / c.sum()) for c in counts]),
        steps_per_epoch=len(batches),
        epoch_loss=np.array(epochs[0]),
        epoch_lr=np.array(epochs[1]),
        stop_reason=stop_reason,
        diverged=diverged,
    )


def thin_trajectory(trajectory: Trajectory, max_snapshots: int) -> Trajectory:
    """At most ``max_snapshots`` snapshots per run, evenly spaced along the path's length in
    parameter space (dense where SGD moves, sparse where it settles); the first and last kept."""
    parts = []
    for run in trajectory.runs():
        part = trajectory.select(run)
        if len(part) > max_snapshots:
            moves = np.linalg.norm(np.diff(part.params.astype(np.float64), axis=0), axis=1)
            length = np.concatenate([[0.0], np.cumsum(moves)])
            targets = np.linspace(0.0, length[-1], max_snapshots)
            keep = np.unique(np.searchsorted(length, targets).clip(0, len(part) - 1))
            keep = np.union1d(keep, [0, len(part) - 1])
            part = _rows(part, keep)
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    run = np.concatenate([p.run for p in parts])  # concat numbers runs 0, 1, ...: keep their own
    return dataclasses.replace(Trajectory.concat(parts), run=run)


def _rows(trajectory: Trajectory, keep: np.ndarray) -> Trajectory:
    return dataclasses.replace(
        trajectory,
        params=trajectory.params[keep],
        step=trajectory.step[keep],
        epoch_fraction=trajectory.epoch_fraction[keep],
        train_loss=trajectory.train_loss[keep],
        run=trajectory.run[keep],
        buffers=trajectory.buffers[keep],
    )


def explain_spike(
    model: nn.Module,
    split: Split,
    config: LandscapeConfig,
    trajectory: Trajectory,
    snapshot_loss: np.ndarray,
    log: RunLog,
    *,
    device: torch.device,
) -> dict[str, Any] | None:
    """The largest rise of the loss between consecutive drawn snapshots of one run, located to
    the SGD step that caused it by replaying the steps in between from the earlier snapshot.

    ``trajectory`` and ``snapshot_loss`` hold this run's snapshots only. The replay is exact for
    plain SGD (no momentum state is lost at a snapshot) and is checked: it must land on the later
    snapshot. Returns None when the path never rises or momentum makes a replay inexact.
    """
    rises = np.diff(snapshot_loss)
    if len(rises) == 0 or not np.nanmax(rises) > 0 or config.train.momentum:
        return None
    i = int(np.nanargmax(rises))
    first, last = int(trajectory.step[i]), int(trajectory.step[i + 1])
    losses, reached = _replay(
        model, split, config, trajectory.params[i], log, (first, last), device
    )
    exact = bool(np.allclose(reached, trajectory.params[i + 1], rtol=1e-4, atol=1e-5))
    jumps = np.diff(losses)
    k = int(np.argmax(jumps))
    at = first + k + 1  # the step whose update raised the loss most
    per_epoch = log.steps_per_epoch
    batch = (at - 1) % per_epoch + 1
    return {
        "from_step": first,
        "to_step": last,
        "from_loss": float(snapshot_loss[i]),
        "to_loss": float(snapshot_loss[i + 1]),
        "step": at,
        "epoch": (at - 1) // per_epoch + 1,
        "batch_in_epoch": batch,
        "batches_per_epoch": per_epoch,
        "epoch_boundary": batch in (1, per_epoch),
        "loss_before": float(losses[k]),
        "loss_after": float(losses[k + 1]),
        "share_of_rise": float(jumps[k] / (losses[-1] - losses[0]))
        if losses[-1] > losses[0]
        else None,
        **_step_record(log, at - 1),
        "replay_matches_snapshot": exact,
    }


def _replay(
    model: nn.Module,
    split: Split,
    config: LandscapeConfig,
    start: np.ndarray,
    log: RunLog,
    steps: tuple[int, int],
    device: torch.device,
) -> tuple[list[float], np.ndarray]:
    """From the parameters ``start`` (after step ``first``), redo SGD steps first+1..last in the
    training run's minibatch order and rates; the subset loss before and after each step, and
    the parameters reached."""
    first, last = steps
    nn.utils.vector_to_parameters(torch.as_tensor(start, device=device), model.parameters())
    optimizer = make_optimizer(model, config.train)
    losses = [evaluate(model, split, device)[0]]
    step = 0
    model.train()
    loader = _loader(split, config, device)  # the same minibatch order as the training run
    while step < last:
        for x, y in loader:
            step += 1
            if step <= first:
                continue
            loss = _cross_entropy(model, x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.lr = float(log.lr[step - 1])
            optimizer.step()
            losses.append(evaluate(model, split, device)[0])
            if step == last:
                break
    return losses, nn.utils.parameters_to_vector(model.parameters()).detach().cpu().numpy()


def _step_record(log: RunLog, row: int) -> dict[str, Any]:
    """What the run's log says of the step in ``row`` (0-based): its rate, update and batch."""
    lr_before = float(log.lr[row - 1]) if row > 0 else float(log.lr[row])
    top = int(log.top_class[row])
    return {
        "lr": float(log.lr[row]),
        "lr_changed": float(log.lr[row]) != lr_before,
        "update_norm": float(log.update_norm[row]),
        # against the steps taken at the same learning rate
        "update_norm_over_median": float(
            log.update_norm[row] / np.median(log.update_norm[log.lr == log.lr[row]])
        ),
        "batch_loss": float(log.batch_loss[row]),
        "batch_top_class": top,
        "batch_top_class_name": CLASSES[top] if top < len(CLASSES) else str(top),
        "batch_top_share": float(log.top_share[row]),
        "batch_top_share_percentile": float(100 * (log.top_share < log.top_share[row]).mean()),
    }
