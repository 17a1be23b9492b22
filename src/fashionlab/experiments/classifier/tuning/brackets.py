"""Synchronous successive halving: a bracket of trials asked together and trained as populations.

The ``sha`` scheduler (``TuneConfig.pruner = "sha"``). A bracket of ``n`` trials:

1. is asked from the study at once (the caller's ``study.ask()``; TPE's constant liar counts the
   bracket's earlier trials as running and bad, so one bracket spreads over the space);
2. is split into groups that can share one :class:`fashionlab.population.Population`: the same
   depth, activation, BatchNorm and batch size, widths padded exactly, at most
   :func:`fashionlab.population.max_population` members a group (a memory budget), in the order
   the trials were asked;
3. rung by rung (``TuneConfig.epochs``): every group trains its constant-lr trunk to the fork of
   the rung and its WSD branches to the rung's end together; each member is scored on validation
   and the value is reported (``trial.report``, committed to the storage). Only when every trial
   of the bracket has its value at the rung are the best ``max(1, n_r // eta)`` of its ``n_r``
   promoted (ties: the lower trial number first), and the others told PRUNED. No trial is
   promoted because it ran first, as asynchronous halving (``asha``) with one worker does.
   After the top rung the survivors are told COMPLETE with their best rung value.

A trial's value, rungs and user attributes are those the ``asha`` path records
(:class:`.objective.Objective`), so the export, the figures and the pick do not depend on the
scheduler. A trial whose trunk diverges (NaN/inf) gets 0 at that rung and leaves the bracket at
once, COMPLETE with its best value so far, as in the ``asha`` path.

Exactness: a member's floats are those of the same setting trained alone with the same seed in a
population padded to its group's widths; against the setting trained alone unpadded, the same
up to float rounding (:mod:`fashionlab.population`). Groups follow the order of the trials, so
one seed and one worker give the same study twice.

Resuming: after every rung below the top, each promoted trial's trunk is saved as the ``asha``
path saves it (``<tune>/trunks/trial-<key>.pt``, atomically, with its rung values). A bracket cut
by a kill or an interrupt has its RUNNING trials failed and retried (``workers.fail_and_retry``);
the next bracket asks the retries first, and a retry that finds its trunk goes on from it (in a
population of its own) with its committed rung values: a kill loses at most the rung that was
training. It keeps the promotions it had earned (a trunk is saved only past a rung the trial was
promoted at) and competes in its new bracket from its next rung on; the floats it goes on with
are those of its first population (bit for bit, :mod:`fashionlab.population`).

Workers: every worker (local process or machine on a PostgreSQL study) runs whole brackets, one
at a time; the trials of brackets that run at once are kept apart by the constant liar.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ....batches import Split
from ....population import Population, can_stack, max_population, seeded_model
from ....train import TrainConfig, evaluate
from ..config import TuneConfig
from ..space import settings_from_params
from .objective import (
    Objective,
    _load_trunk,
    _log_trial,
    _remove,
    _save_trunk,
    suggest_params,
    trial_key,
)
from .rungs import Trunk, fork_epoch

__all__ = ["Bracket", "promoted"]

logger = logging.getLogger(__name__)

MEMORY_BUDGET = 1 << 30  # bytes one population may take (see population.max_population)


@dataclass(eq=False)
class _Entry:
    """One trial of the bracket: its setting, its seed, the rung values it has so far."""

    trial: Any
    key: int
    params: dict[str, Any]
    model_config: dict[str, Any]
    config: TrainConfig
    path: Path | None
    values: dict[int, tuple[float, float]] = field(default_factory=dict)
    resume: Trunk | None = None
    epochs_trained: int = 0
    seconds: float = 0.0
    diverged: bool = False
    member: int = 0  # its index among its group's population members

    @property
    def accs(self) -> list[float]:
        return [self.values[r][0] for r in sorted(self.values)]

    def value(self) -> float:
        return max(self.accs, default=0.0)


@dataclass(eq=False)
class _Group:
    """Trials that train as one population; ``trunk`` is None until it first trains."""

    entries: list[_Entry]
    trunk: Population | None = None
    done: int = 0  # trunk epochs


def promoted(values: dict[int, float], eta: int) -> list[int]:
    """The keys of ``values`` (trial number -> value at a rung) that go on: the best
    ``max(1, len(values) // eta)``, ties to the lower number."""
    ranked = sorted(values, key=lambda number: (-values[number], number))
    return sorted(ranked[: max(1, len(values) // eta)])


class Bracket:
    """Train the trials ``trials`` (asked together) through the rungs of ``config.epochs``.

    Args:
        trials: Optuna trials in the order they were asked, owned by the caller (heartbeats).
        objective: the study's :class:`.objective.Objective` (its data, config and trunk folder).
        tell: ``tell(trial, state, value)`` with state ``"PRUNED"`` or ``"COMPLETE"``; called
            once per trial as soon as its outcome is known.
        rungs: the rungs this bracket scores, a tail of ``config.epochs`` (None: all of them);
            ``(config.epochs[-1],)`` is the bracket of ``config.direct`` with no early stopping.
    """

    def __init__(
        self,
        trials: Sequence[Any],
        objective: Objective,
        tell: Callable[[Any, str, float | None], None],
        rungs: Sequence[int] | None = None,
    ) -> None:
        self.tell = tell
        self.config: TuneConfig = objective.config
        self.train_split: Split = objective.train
        self.val: Split = objective.val
        self.rungs = list(self.config.epochs if rungs is None else rungs)
        if not self.rungs or self.rungs != list(self.config.epochs[-len(self.rungs) :]):
            raise ValueError(f"rungs {self.rungs} are not a tail of {list(self.config.epochs)}")
        self.entries: list[_Entry] = []
        for trial in trials:
            params = suggest_params(trial, self.config)
            key = trial_key(trial)
            model_config, config = settings_from_params(
                params, seed=self.config.seed + key, epochs=self.rungs[-1]
            )
            trial.set_user_attr("train_examples", len(self.train_split))
            trial.set_user_attr("val_examples", len(self.val))
            trial.set_user_attr("seed", config.seed)
            path = objective._trunk_path(key)
            entry = _Entry(trial, key, params, model_config, config, path)
            entry.resume = _load_trunk(path, params)
            if entry.resume is not None:
                trial.set_user_attr("resumed_rungs", sorted(entry.resume.values))
                entry.values = dict(entry.resume.values)
                for rung in sorted(entry.values):  # the values the cut trial had committed
                    trial.report(entry.values[rung][0], rung)
                self._record(entry)
            self.entries.append(entry)

    # --- groups ---------------------------------------------------------------------------------

    def _groups(self) -> list[_Group]:
        """Fresh trials grouped by what can stack (in the asked order, at most a memory budget
        of members a group); every resumed trial alone, from its trunk."""
        groups: list[_Group] = []
        open_groups: list[_Group] = []
        for entry in self.entries:
            if entry.resume is not None:
                groups.append(_Group([entry]))
                continue
            for group in open_groups:
                first = group.entries[0]
                members = [e.model_config for e in (*group.entries, entry)]
                if (
                    first.config.batch_size == entry.config.batch_size
                    and can_stack(first.model_config, entry.model_config)
                    and len(members)
                    <= max_population(members, entry.config.batch_size, MEMORY_BUDGET)
                ):
                    group.entries.append(entry)
                    break
            else:
                group = _Group([entry])
                open_groups.append(group)
                groups.append(group)
        return groups

    def _trunk(self, group: _Group) -> Population:
        if group.trunk is None:
            if group.entries[0].resume is not None:
                resume = group.entries[0].resume
                group.trunk = Population.from_checkpoint(
                    resume.population, self.train_split, device=self.config.device
                )
                group.done = resume.epochs
                group.entries[0].member = group.trunk.live[0]
            else:
                models = [seeded_model(e.model_config, e.config.seed) for e in group.entries]
                configs = [
                    dataclasses.replace(e.config, schedule="constant") for e in group.entries
                ]
                group.trunk = Population(
                    models, configs, self.train_split, device=self.config.device
                )
                for index, entry in enumerate(group.entries):
                    entry.member = index
        return group.trunk

    # --- rungs ----------------------------------------------------------------------------------

    def _score(self, group: _Group, rung: int) -> None:
        """Bring every member of ``group`` to its value at ``rung`` (trunk to the fork, the WSD
        branches to the end, validation)."""
        todo = [e for e in group.entries if rung not in e.values]
        if not todo:
            return
        start = time.perf_counter()
        trunk = self._trunk(group)
        fork = fork_epoch(rung, self.config.decay)
        trained = 0
        if fork > group.done:
            trunk.train(fork - group.done)
            trained += fork - group.done
            group.done = fork
        branches = {}
        for entry in todo:
            member = entry.member
            if trunk.members[member].diverged:
                entry.diverged = True
                entry.values[rung] = (0.0, math.nan)
            else:
                branches[member] = dataclasses.replace(entry.config, epochs=rung, schedule="wsd")
        if branches:
            branch = trunk.fork(branches)
            branch.train()
            trained += rung - fork
            for entry in todo:
                member = entry.member
                if member not in branches:
                    continue
                if branch.members[member].diverged:
                    val_loss, val_acc = math.nan, 0.0
                else:
                    val_loss, val_acc = evaluate(branch.model(member), self.val, self.config.device)
                    if not math.isfinite(val_loss):
                        val_acc = 0.0
                entry.values[rung] = (val_acc, val_loss)
        share = (time.perf_counter() - start) / len(todo)
        for entry in todo:
            entry.seconds += share
            entry.epochs_trained += trained
            self._record(entry)
            entry.trial.report(entry.values[rung][0], rung)  # committed before any promotion

    def _keep(self, group: _Group, keep: list[_Entry]) -> None:
        """Drop the members of ``group`` not in ``keep``; save the trunks of those kept."""
        trunk = self._trunk(group)
        group.entries = [e for e in group.entries if e in keep]
        if not group.entries:
            group.trunk = None
            return
        kept = {e.member: trunk.members[e.member].config for e in group.entries}
        group.trunk = trunk.fork(kept)
        for entry in group.entries:
            if entry.path is not None:
                alone = group.trunk.fork({entry.member: kept[entry.member]})
                trunk_state = Trunk(group.done, alone.checkpoint(), dict(entry.values))
                _save_trunk(entry.path, trunk_state, entry.params)

    def run(self) -> int:
        """Train the bracket to the end; returns how many trials were told (all of them)."""
        groups = self._groups()
        alive = list(self.entries)
        told = 0
        for index, rung in enumerate(self.rungs):
            for group in groups:
                self._score(group, rung)
            if index == len(self.rungs) - 1:
                for entry in alive:
                    told += self._finish(entry, "COMPLETE", rung)
                break
            # A retry promoted past this rung in its first bracket (its trunk was saved there)
            # keeps that; the others compete among themselves, a diverged one last (it counts
            # for the bracket's shape but never goes on).
            earned = {e.trial.number for e in alive if e.resume and rung in e.resume.values}
            contest = {
                e.trial.number: -1.0 if e.diverged else e.values[rung][0]
                for e in alive
                if e.trial.number not in earned
            }
            go_on = earned | (set(promoted(contest, self.config.eta)) if contest else set())
            for entry in alive:
                if entry.diverged:
                    told += self._finish(entry, "COMPLETE", rung)
                elif entry.trial.number not in go_on:
                    told += self._finish(entry, "PRUNED", rung)
            alive = [e for e in alive if e.trial.number in go_on and not e.diverged]
            for group in groups:
                if any(e in alive for e in group.entries):
                    self._keep(group, [e for e in group.entries if e in alive])
                else:
                    group.entries, group.trunk = [], None
            groups = [g for g in groups if g.entries]
            if not alive:
                break
        return told

    def _finish(self, entry: _Entry, state: str, rung: int) -> int:
        entry.trial.set_user_attr("epochs_trained", entry.epochs_trained)
        entry.trial.set_user_attr("seconds", entry.seconds)
        _remove(entry.path)
        value = entry.value()
        if state == "PRUNED":
            shown, at = state, rung
        else:
            shown = "DIVERGED" if entry.diverged else state
            at = sorted(entry.values)[entry.accs.index(value)] if entry.values else 0
        acc = entry.values[at][0] if at in entry.values else value
        _log_trial(entry.trial.number, shown, acc, entry.seconds, entry.params, at)
        self.tell(entry.trial, state, value if state == "COMPLETE" else None)
        return 1

    @staticmethod
    def _record(entry: _Entry) -> None:
        reached = sorted(entry.values)
        accs = [entry.values[r][0] for r in reached]
        losses = [entry.values[r][1] for r in reached]
        Objective._record(entry.trial, reached, accs, losses, entry.diverged, seconds=None)
