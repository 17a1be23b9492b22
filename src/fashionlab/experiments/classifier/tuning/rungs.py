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

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ....batches import Split
from ....errors import ConfigError
from ....population import Population
from ....train import TrainConfig, decay_epochs, evaluate

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
    """The stable trunk after ``epochs`` epochs (``population``: its
    :meth:`fashionlab.population.Population.checkpoint`) and the rung values found so far
    (resumable)."""

    epochs: int
    population: dict[str, Any]
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

    The trunk is a one-member :class:`fashionlab.population.Population` at the constant ``lr``;
    each branch is a :meth:`~fashionlab.population.Population.fork` of it with the WSD schedule
    of the rung's length.

    Args:
        model: the freshly initialised :class:`MLP` (as ``fit`` would get it).
        train, val: the training examples and the validation examples the rungs are scored on.
        config: the SGD settings (``lr``, ``batch_size``, ``decay``, ``seed``, ...); its
            ``epochs`` and ``schedule`` are ignored (each rung is a ``wsd`` run of its length).
        rungs: the lengths to score, in epochs.
        on_rung: ``on_rung(r, val_acc, val_loss)`` once rung ``r`` is scored; it may raise (e.g.
            ``optuna.TrialPruned``) to stop.
        on_trunk: after ``on_rung`` returned, the trunk to save (not after the last rung).
        resume: a trunk saved by ``on_trunk`` of an earlier call with the same arguments.

    Raises:
        ConfigError: no rungs or a rung < 1; a batch larger than ``train``; a model that is not
            an :class:`MLP`.
    """
    rungs = sorted(set(rungs))
    if not rungs or rungs[0] < 1:
        raise ConfigError(f"rungs must be epoch counts >= 1, got {rungs!r}")
    trunk_config = dataclasses.replace(config, epochs=rungs[-1], schedule="constant")
    if resume is not None:
        trunk = Population.from_checkpoint(resume.population, train, device=device)
        done, values = resume.epochs, dict(resume.values)
    else:
        trunk = Population([model], [trunk_config], train, device=device)
        done, values = 0, {}
    trained = 0
    for rung in rungs:
        if rung in values:
            continue
        fork = fork_epoch(rung, config.decay)
        if fork > done:
            trunk.train(fork - done)
            trained += fork - done
            if trunk.results[0].diverged:
                return RungResult(values, True, trained)
            done = fork
        branch = trunk.fork({0: dataclasses.replace(config, epochs=rung, schedule="wsd")})
        branch.train()
        trained += rung - fork
        if branch.results[0].diverged:
            val_loss, val_acc = math.nan, 0.0
        else:
            val_loss, val_acc = evaluate(branch.model(0), val, device)
            if not math.isfinite(val_loss):
                val_acc = 0.0
        del branch
        values[rung] = (val_acc, val_loss)
        if on_rung is not None:
            on_rung(rung, val_acc, val_loss)
        if on_trunk is not None and rung != rungs[-1]:
            on_trunk(Trunk(done, trunk.checkpoint(), dict(values)))
    return RungResult(values, False, trained)
