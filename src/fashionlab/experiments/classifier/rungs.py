"""The tuner's fidelity: one stable trunk, a decay branch forked before each rung.

Why this protocol. The training length is what the search spends and what it must choose, so a
trial's value at a rung of ``r`` epochs has to be what a *finished* run of ``r`` epochs scores;
the validation accuracy of a cosine run read off a third of the way in is not that (its lr is
still high), and restarting a fresh run per rung costs the sum of all rung lengths. A
warmup-stable-decay (WSD) schedule gives both (Hu et al. 2024; Hägele et al. 2024): a WSD run of
``r`` epochs holds the constant ``lr`` for ``r - k`` epochs and then decays it linearly to 0
over the last ``k = decay_epochs(r, decay)`` epochs (``decay`` 0.2 by default). Runs of every
length share their stable part, so a trial trains one *trunk* at the constant ``lr`` and, when
the trunk has done ``r - k`` epochs, forks a *branch* (a copy of the weights, the momentum
buffers, the shuffling generator and the dropout generator) that decays over ``k`` epochs and is
scored on validation at epoch ``r``. The branch is, step for step, the WSD run of ``r`` epochs
(``fit`` with ``schedule="wsd"`` and the same seed reproduces its value exactly, which the
tests check), and the trunk goes on as if the branch had never been. The cost of scoring rungs
``r_1 < ... < r_n`` is ``r_n`` epochs plus one decay per rung (about ``decay`` times the sum of
the rungs) instead of the sum of the rungs.

Resuming. After each rung the caller commits the rung's value (``on_rung``) and may save the
trunk (``on_trunk`` gets a :class:`Trunk`); :func:`train_rungs` started with that trunk goes on
from the next fork, with bit-for-bit the same results as an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...batches import FastLoader, Split
from ...errors import ConfigError
from ...train import TrainConfig, _learning_rate, decay_epochs, evaluate, make_optimizer
from ...train import train_epochs as _train_epochs
from ...utils import resolve_device, seed_everything

__all__ = ["Trunk", "RungResult", "fork_epoch", "epochs_to_score", "train_rungs"]


def fork_epoch(rung: int, decay: float) -> int:
    """The trunk epoch at which the decay branch of rung ``rung`` forks."""
    return rung - decay_epochs(rung, decay)


def epochs_to_score(
    rungs: Sequence[int], last: int, decay: float, start: int = 0, done: Sequence[int] = ()
) -> int:
    """The epochs :func:`train_rungs` trains (trunk and decay branches) to score every rung up
    to ``last``, starting from a trunk at epoch ``start`` that has scored the rungs ``done``."""
    new = [r for r in sorted(set(rungs)) if r <= last and r not in done]
    end = max((fork_epoch(r, decay) for r in new), default=start)
    return max(0, end - start) + sum(decay_epochs(r, decay) for r in new)


@dataclass
class Trunk:
    """The stable trunk after ``epochs`` epochs and the rung values found so far (resumable)."""

    epochs: int
    model: dict[str, torch.Tensor]
    velocity: list[torch.Tensor | None]
    loader_rng: torch.Tensor
    torch_rng: torch.Tensor
    values: dict[int, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RungResult:
    """``values[r] = (val_acc, val_loss)`` of the WSD run of ``r`` epochs, for every rung reached;
    ``diverged``: the trunk's loss became NaN/inf (the rungs after that were not reached)."""

    values: dict[int, tuple[float, float]]
    diverged: bool
    epochs_trained: int  # trunk + branch epochs this call trained


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _branch_lr(run: TrainConfig, start: int, total: int, step: int) -> float:
    return _learning_rate(run, start + step, total)


def _rng_state(device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def train_rungs(
    model: nn.Module,
    train: Split,
    config: TrainConfig,
    rungs: Sequence[int],
    *,
    val: Split,
    device: str | torch.device = "cpu",
    on_rung: Callable[[int, float, float], None] | None = None,
    on_trunk: Callable[[Trunk], None] | None = None,
    resume: Trunk | None = None,
) -> RungResult:
    """Score the WSD runs of every length in ``rungs`` with one trunk and a branch per rung.

    Args:
        model: the freshly initialised model (as ``fit`` would get it).
        train, val: the training examples and the validation examples the rungs are scored on.
        config: the SGD settings (``lr``, ``batch_size``, ``decay``, ``seed``, ...); its
            ``epochs`` and ``schedule`` are ignored (each rung is a ``wsd`` run of its length).
        rungs: the lengths to score, in epochs.
        on_rung: ``on_rung(r, val_acc, val_loss)`` once rung ``r`` is scored; it may raise (e.g.
            ``optuna.TrialPruned``) to stop.
        on_trunk: after ``on_rung`` returned, the trunk to save (not after the last rung).
        resume: a trunk saved by ``on_trunk`` of an earlier call with the same arguments.
    """
    rungs = sorted(set(rungs))
    if not rungs or rungs[0] < 1:
        raise ConfigError(f"rungs must be epoch counts >= 1, got {rungs!r}")
    if config.batch_size > len(train):
        raise ConfigError(
            f"batch size {config.batch_size} is larger than the training set ({len(train)} "
            f"examples); lower the batch size or train on more examples"
        )
    device = resolve_device(device)
    seed_everything(config.seed)  # as fit: dropout masks come from the global generator
    model.to(device)
    drop_last = len(train) % config.batch_size == 1
    loader = FastLoader(
        train, config.batch_size, shuffle=True, seed=config.seed, device=device, drop_last=drop_last
    )
    optimizer = make_optimizer(model, config)
    per_epoch = len(loader)
    done, values, trained = 0, {}, 0
    if resume is not None:
        model.load_state_dict(resume.model)
        optimizer.velocity = [None if v is None else v.to(device) for v in resume.velocity]
        loader.generator.set_state(resume.loader_rng)
        _set_rng_state(device, resume.torch_rng)
        done, values = resume.epochs, dict(resume.values)
    for rung in rungs:
        if rung in values:
            continue
        fork = fork_epoch(rung, config.decay)
        if fork > done:
            diverged, _ = _train_epochs(model, loader, optimizer, fork - done, _cross_entropy)
            trained += fork - done
            if diverged:
                return RungResult(values, True, trained)
            done = fork
        loader_state, rng_state = loader.generator.get_state(), _rng_state(device)
        branch = copy.deepcopy(model)
        run = dataclasses.replace(config, epochs=rung, schedule="wsd")
        branch_optimizer = make_optimizer(branch, run)
        branch_optimizer.velocity = [None if v is None else v.clone() for v in optimizer.velocity]
        start, total = fork * per_epoch, rung * per_epoch
        diverged, _ = _train_epochs(
            branch,
            loader,
            branch_optimizer,
            rung - fork,
            _cross_entropy,
            lr_at=partial(_branch_lr, run, start, total),
        )
        trained += rung - fork
        if diverged:
            val_loss, val_acc = math.nan, 0.0
        else:
            val_loss, val_acc = evaluate(branch, val, device)
            if not math.isfinite(val_loss):
                val_acc = 0.0
        del branch, branch_optimizer
        loader.generator.set_state(loader_state)
        _set_rng_state(device, rng_state)
        values[rung] = (val_acc, val_loss)
        if on_rung is not None:
            on_rung(rung, val_acc, val_loss)
        if on_trunk is not None and rung != rungs[-1]:
            on_trunk(
                Trunk(
                    done,
                    {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    [None if v is None else v.detach().cpu().clone() for v in optimizer.velocity],
                    loader.generator.get_state(),
                    _rng_state(device).cpu(),
                    dict(values),
                )
            )
    return RungResult(values, False, trained)
