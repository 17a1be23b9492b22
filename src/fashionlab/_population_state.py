"""Forks and resumable checkpoints of a :class:`fashionlab.population.Population`, mixed into
it (the methods read and build its tensors, members and generators)."""

from __future__ import annotations

import copy
import os
from typing import Any, Self

import torch

from .atomic import atomic_path
from .batches import Split
from .errors import ConfigError
from .models import build_mlp
from .train import History, TrainConfig


class PopulationState:
    """:meth:`fork`, :meth:`checkpoint`, :meth:`save` and :meth:`from_checkpoint`."""

    def fork(self, configs: dict[int, TrainConfig]) -> Self:
        """A copy of the live members ``configs`` names, each with its new config (e.g. the WSD
        run of a rung forked from a constant-lr trunk): the same weights, momentum, statistics,
        generators and step count, so the copy goes on as that member would have with the new
        schedule, and this population goes on as if no fork had been made.

        Raises:
            ConfigError: a member that is not live, or a new batch size.
        """
        rows = []
        for m, config in configs.items():
            if m not in self.live:
                raise ConfigError(f"member {m} is not training; only live members can fork")
            if config.batch_size != self.batch_size:
                raise ConfigError("a fork keeps the population's batch size")
            rows.append(self.live.index(m))
        other = copy.copy(self)
        other.members = copy.deepcopy(self.members)
        for m, config in configs.items():
            other.members[m].config = config
        if self.order_rng is not None:  # the shared order goes on from here in both
            other.order_rng = torch.Generator()
            other.order_rng.set_state(self.order_rng.get_state())
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        with torch.no_grad():
            other.params = self._select(self.params, rows)
            other.stats = self.stats.index_select(0, index).clone()
            other.velocity = self._select(self.velocity, rows)
        other.live = [self.live[r] for r in rows]
        other._rebuild()
        return other

    def checkpoint(self) -> dict[str, Any]:
        """Everything :meth:`from_checkpoint` needs to go on bit for bit (CPU tensors)."""
        return {
            "format": "fashionlab-population-1",
            "live": list(self.live),
            "widths": self.sizes[1:-1],
            "order_seed": self.order_seed,
            "order_rng": None if self.order_rng is None else self.order_rng.get_state(),
            "params": self._unpack(self.params.detach()).cpu().clone(),  # (K, P) member rows
            "stats": self.stats.cpu().clone(),
            "velocity": self._unpack(self.velocity).cpu().clone(),
            "members": [
                {
                    "model_config": m.model_config,
                    "config": m.config.to_dict(),
                    "order_rng": m.order_rng.get_state(),
                    "dropout_rng": m.dropout_rng.get_state().cpu(),
                    "tracked": m.tracked,
                    "steps": m.steps,
                    "epochs": m.epochs,
                    "forwards": m.forwards,
                    "history": vars(m.history),
                    "diverged": m.diverged,
                    "seconds": m.seconds,
                    "final": m.final,
                }
                for m in self.members
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`checkpoint` to ``path`` atomically (all or nothing)."""
        with atomic_path(path) as tmp:
            torch.save(self.checkpoint(), tmp)

    @classmethod
    def from_checkpoint(
        cls, state: dict[str, Any], train: Split, *, device: str | torch.device = "cpu"
    ) -> Self:
        """The population :meth:`checkpoint` saved, ready to train on ``train`` (the same
        examples as before).

        Raises:
            ConfigError: not a population checkpoint.
        """
        if not isinstance(state, dict) or state.get("format") != "fashionlab-population-1":
            raise ConfigError("not a population checkpoint (no 'fashionlab-population-1' format)")
        entries = state["members"]
        models = [build_mlp(e["model_config"]) for e in entries]
        configs = [TrainConfig(**e["config"]) for e in entries]
        population = cls(
            models,
            configs,
            train,
            device=device,
            widths=state.get("widths"),
            order_seed=state.get("order_seed"),
        )
        if population.order_rng is not None:
            population.order_rng.set_state(state["order_rng"])
        for member, e in zip(population.members, entries, strict=True):
            member.order_rng.set_state(e["order_rng"])
            member.dropout_rng.set_state(e["dropout_rng"])  # a CPU byte tensor on any device
            member.tracked, member.steps, member.epochs = e["tracked"], e["steps"], e["epochs"]
            member.forwards, member.diverged, member.seconds = (
                e["forwards"],
                e["diverged"],
                e["seconds"],
            )
            member.history = History(**e["history"])
            member.final = e["final"]
        population.live = list(state["live"])
        with torch.no_grad():
            population.params = population._pack(state["params"].to(population.device).clone())
            population.stats = state["stats"].to(population.device).clone()
            population.velocity = population._pack(state["velocity"].to(population.device).clone())
        population._rebuild()
        return population
