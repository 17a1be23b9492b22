"""Where the members' tensors live in a :class:`fashionlab.population.Population`: the slots of
the (K, P) member rows, the stored layout of the parameters (the rows themselves, or with a
shared minibatch order the first-layer weights of all members as one matrix followed by the rest
of each row), and copying a member in and out as a plain :class:`MLP` state dict. Mixed into
``Population``, which holds the tensors these methods read (``params``, ``stats``, ``sizes``,
``members``, ``live``)."""

from __future__ import annotations

import math

import torch

from ._stacked import Slot, state_keys
from .models import MLP, build_mlp
from .runtime import resolve_device


class StackedLayout:
    """The layout of a population's tensors and the copies of one member in and out."""

    def _layout(self) -> None:
        self.slots: list[Slot] = []
        self.stat_slots: list[Slot] = []
        offset = stat = 0
        for layer, (fan_in, out) in enumerate(zip(self.sizes, self.sizes[1:], strict=False)):
            shapes = [("weight", (out, fan_in)), ("bias", (out,))]
            if layer < self.hidden_layers and self.batchnorm:
                shapes += [("bn_weight", (out,)), ("bn_bias", (out,))]
                for kind in ("running_mean", "running_var"):
                    self.stat_slots.append(Slot(layer, kind, stat, (out,)))
                    stat += out
            if layer < self.hidden_layers and self.activation == "prelu":
                shapes.append(("prelu", (1,)))
            for kind, shape in shapes:
                self.slots.append(Slot(layer, kind, offset, shape))
                offset += math.prod(shape)
        self.n_params, self.n_stats = offset, stat
        # the stored layout of the parameters (and their gradients and momentum): (K, P), row k
        # member k's, or with a shared order (rows, 784): first the first-layer weights of all
        # members as one (K * out, 784) matrix, then the rest of each member's row padded to a
        # multiple of 784 (the padding stays 0); either way a 2-D tensor whose rows each belong
        # to one member, so the update's per-row coefficients are (rows, 1) columns
        self.n_first = self.sizes[1] * self.sizes[0]
        rest = self.n_params - self.n_first
        self.n_rest = -(-rest // self.sizes[0]) * self.sizes[0]
        self.rows_per_member = (
            1 if self.order_rng is None else (self.n_first + self.n_rest) // self.sizes[0]
        )
        # 1 where an entry of a row is a weight matrix's (L2 applies), else 0
        self.matrix_mask = torch.zeros(offset, device=resolve_device("cpu"))
        for slot in self.slots:
            if slot.kind == "weight":
                self.matrix_mask[slot.offset : slot.offset + math.prod(slot.shape)] = 1.0

    def _views(self, flat: torch.Tensor, slots: list[Slot]) -> dict[tuple[int, str], torch.Tensor]:
        k = flat.shape[0]
        return {
            (s.layer, s.kind): flat[:, s.offset : s.offset + math.prod(s.shape)].view(k, *s.shape)
            for s in slots
        }

    def _param_views(self, stored: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
        """(K, *shape) views of parameters (or gradients, or momentum) in the stored layout."""
        if self.order_rng is None:
            return self._views(stored, self.slots)
        k = stored.shape[0] // self.rows_per_member
        flat = stored.view(-1)
        first = flat[: k * self.n_first]
        rest = flat[k * self.n_first :].view(k, self.n_rest)
        views = {}
        for s in self.slots:
            if s.layer == 0 and s.kind == "weight":  # offset 0
                views[(0, "weight")] = first.view(k, *s.shape)
            else:
                start = s.offset - self.n_first
                views[(s.layer, s.kind)] = rest[:, start : start + math.prod(s.shape)].view(
                    k, *s.shape
                )
        return views

    def _pack(self, rows: torch.Tensor) -> torch.Tensor:
        """(K, P) member rows -> the stored layout (a new tensor with a shared order)."""
        if self.order_rng is None:
            return rows
        k = rows.shape[0]
        stored = rows.new_zeros(k * self.rows_per_member, self.sizes[0])
        flat = stored.view(-1)
        flat[: k * self.n_first].view(k, self.n_first).copy_(rows[:, : self.n_first])
        rest = self.n_params - self.n_first
        flat[k * self.n_first :].view(k, self.n_rest)[:, :rest].copy_(rows[:, self.n_first :])
        return stored

    def _unpack(self, stored: torch.Tensor) -> torch.Tensor:
        """The stored layout -> (K, P) member rows (a new tensor with a shared order)."""
        if self.order_rng is None:
            return stored
        k = stored.shape[0] // self.rows_per_member
        flat = stored.reshape(-1)
        rest = self.n_params - self.n_first
        return torch.cat(
            [
                flat[: k * self.n_first].view(k, self.n_first),
                flat[k * self.n_first :].view(k, self.n_rest)[:, :rest],
            ],
            1,
        )

    def _select(self, stored: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """The stored tensor of the members at ``rows`` only (a new tensor)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        return self._pack(self._unpack(stored.detach()).index_select(0, index))

    def _load_row(self, row: int, state: dict[str, torch.Tensor]) -> None:
        """Copy a member's (unpadded) state dict into row ``row``; padding stays 0."""
        keys = state_keys(self.hidden_layers, self.batchnorm, self.activation, state)
        with torch.no_grad():
            for views, slots in (
                (self._param_views(self.params), self.slots),
                (self._views(self.stats, self.stat_slots), self.stat_slots),
            ):
                for slot in slots:
                    value = state[keys[(slot.layer, slot.kind)]]
                    target = views[(slot.layer, slot.kind)][row]
                    target[tuple(slice(0, d) for d in value.shape)] = value.to(self.device)

    def state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s weights as a plain :class:`MLP` state dict (unpadded, on the CPU)."""
        state = self.members[member].final
        if state is not None:
            return {k: v.clone() for k, v in state.items()}
        return self._row_state(self.live.index(member))

    def model(self, member: int) -> MLP:
        """Member ``member`` as a plain :class:`MLP` (a copy on the population's device) holding
        its current weights."""
        model = build_mlp(self.members[member].model_config)
        model.load_state_dict(self.state_dict(member))
        return model.to(self.device)

    def _row_state(self, row: int) -> dict[str, torch.Tensor]:
        member = self.members[self.live[row]]
        template = build_mlp(member.model_config).state_dict()
        keys = state_keys(self.hidden_layers, self.batchnorm, self.activation, template)
        views = self._param_views(self.params.detach()) | self._views(self.stats, self.stat_slots)
        state = {}
        for (layer, kind), key in keys.items():
            if kind == "num_batches_tracked":
                state[key] = torch.tensor(member.tracked + member.forwards, dtype=torch.long)
                continue
            shape = template[key].shape
            value = views[(layer, kind)][row][tuple(slice(0, d) for d in shape)]
            state[key] = value.detach().cpu().clone()
        return state

    @torch.no_grad()
    def copy_into(self, row: int, model: MLP) -> None:
        """Copy the weights and statistics of the member at ``row`` into ``model`` (an
        :class:`MLP` of its config), in place: cheaper than :meth:`model` at every step."""
        state = model.state_dict()
        keys = state_keys(self.hidden_layers, self.batchnorm, self.activation, state)
        views = self._param_views(self.params.detach()) | self._views(self.stats, self.stat_slots)
        member = self.members[self.live[row]]
        for (layer, kind), key in keys.items():
            target = state[key]
            if kind == "num_batches_tracked":
                target.fill_(member.tracked + member.forwards)
            else:
                target.copy_(views[(layer, kind)][row][tuple(slice(0, d) for d in target.shape)])
