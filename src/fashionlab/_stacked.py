"""The pieces of :mod:`fashionlab.population` that are not the population's own state: its
layout (slots, the (layer, kind) keys of an MLP state dict), the sizes and the memory rule, the
per-member bookkeeping, and the stacked program of one SGD step (forward, hand-written backward,
update), mixed into :class:`fashionlab.population.Population`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .models import MLP, build_mlp
from .runtime import seed_everything
from .train import History, TrainConfig

HAND_WRITTEN = ("relu", "leaky_relu", "elu", "gelu")
_STACK_KEYS = ("hidden_layers", "activation", "batchnorm", "in_features", "num_classes")
_LEAKY_SLOPE = 0.01  # models.ACTIVATIONS' leaky ReLU


def seeded_model(model_config: dict[str, Any], seed: int) -> MLP:
    """The :class:`MLP` of ``model_config`` initialised from ``seed`` (``seed_everything(seed)``
    first), as every classifier run starts."""
    seed_everything(seed)
    return build_mlp(dict(model_config))


def hidden_widths(config: dict[str, Any]) -> list[int]:
    units = config["units"]
    return [units] * config["hidden_layers"] if isinstance(units, int) else list(units)


def can_stack(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two MLP configs can share a population (same depth, activation, BatchNorm,
    input and output size; widths and dropout may differ)."""
    full = [MLP(1, 1).config | dict(c) for c in (first, second)]
    return all(full[0][key] == full[1][key] for key in _STACK_KEYS)


def population_bytes(model_config: dict[str, Any], batch_size: int) -> int:
    """Bytes one member takes in a population: parameters, gradients and momentum (3 floats per
    parameter), BatchNorm statistics, and the activations one step keeps (input, pre- and
    post-activation and dropout mask of each layer, logits and their gradient)."""
    config = MLP(1, 1).config | dict(model_config)
    sizes = [config["in_features"], *hidden_widths(config), config["num_classes"]]
    params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))
    activations = batch_size * (sizes[0] + 4 * sum(sizes[1:-1]) + 3 * sizes[-1])
    stats = 2 * sum(sizes[1:-1]) if config["batchnorm"] else 0
    return 4 * (3 * params + stats + 2 * activations)


def max_population(
    model_configs: Sequence[dict[str, Any]], batch_size: int, budget_bytes: int = 1 << 30
) -> int:
    """The largest K such that K members, each as large as the largest of ``model_configs``,
    fit in ``budget_bytes`` (default 1 GiB; at least 1). The rule: ``budget //
    population_bytes(widest)``; on a CPU the step time grows with K past the point where the
    per-op overhead is paid once, so callers also cap K by how many settings they have."""
    largest = max(population_bytes(c, batch_size) for c in model_configs)
    return max(1, budget_bytes // largest)


@dataclass
class Slot:
    """Where one tensor of a member lives in the (K, P) parameters (or (K, R) statistics)."""

    layer: int  # hidden layer index, or hidden_layers for the head
    kind: str  # weight, bias, bn_weight, bn_bias, prelu, running_mean, running_var
    offset: int
    shape: tuple[int, ...]  # padded


@dataclass
class Member:
    """Everything of one member that is not a row of the stacked tensors."""

    model_config: dict[str, Any]
    config: TrainConfig
    order_rng: torch.Generator
    dropout_rng: torch.Generator
    tracked: int = 0  # BatchNorm's num_batches_tracked at the start
    steps: int = 0  # SGD steps taken (the schedule's position)
    epochs: int = 0  # epochs finished
    forwards: int = 0  # training forwards (BatchNorm's counter)
    history: History = field(default_factory=History)
    diverged: bool = False
    seconds: float = 0.0
    final: dict[str, torch.Tensor] | None = None  # the state dict once it left the population


class StackedLinear(torch.autograd.Function):
    """K linear layers x (K, B, in), weight (K, out, in), bias (K, out) -> (K, B, out), whose
    backward computes the weight gradient as grad^T @ x, the form autograd uses for one
    ``F.linear`` and the hand-written backward uses (``bmm``'s own backward computes
    x^T @ grad: other last bits)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> Any:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(1)


def shared_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K first layers on one shared minibatch: x (B, in), weight (K, out, in) contiguous, bias
    (K, out) -> (K, B, out), as one (B, in) @ (in, K * out) product."""
    k, out, fan_in = weight.shape
    batch = x.shape[0]
    z = torch.mm(x, weight.view(k * out, fan_in).t()).view(batch, k, out)
    # written (K, B, out)-contiguous, as a batched product writes it: the kernels after it (e.g.
    # BatchNorm's) then see the layout they see for a member alone
    result = torch.empty(k, batch, out, device=x.device)
    return torch.add(z.transpose(0, 1), bias.unsqueeze(1), out=result)


def shared_weight_grad(grad: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The weight gradient of :func:`shared_linear`, grad^T @ x for all K at once: grad (K, B,
    out), x (B, in) -> ``out`` (K * out, in), one product."""
    k, batch, width = grad.shape
    return torch.mm(grad.transpose(1, 2).reshape(k * width, batch), x, out=out)


class SharedLinear(torch.autograd.Function):
    """:func:`shared_linear` for autograd, with :func:`shared_weight_grad` as its backward (the
    floats of the hand-written backward); x is data, so no gradient flows to it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> Any:
        ctx.save_for_backward(x)
        ctx.weight_shape = weight.shape
        return shared_linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (x,) = ctx.saved_tensors
        k, out, fan_in = ctx.weight_shape
        weight = shared_weight_grad(grad, x, torch.empty(k * out, fan_in, device=x.device))
        return None, weight.view(k, out, fan_in), grad.sum(1)


def batchnorm_tracked(model: MLP) -> int:
    return next(
        (int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm1d)), 0
    )


def state_keys(
    hidden_layers: int, batchnorm: bool, activation: str, state: dict[str, torch.Tensor]
) -> dict[tuple[int, str], str]:
    """(layer, kind) -> key, read off a state dict's keys (dropout shifts the body's indices)."""
    keys: dict[tuple[int, str], str] = {}
    layer = -1
    index = 0
    names = {key.rsplit(".", 1)[0] for key in state if key.startswith("body.")}
    body = sorted(int(name.split(".")[1]) for name in names)
    for index in body:
        prefix = f"body.{index}."
        if f"{prefix}running_mean" in state:
            for kind in ("running_mean", "running_var", "num_batches_tracked"):
                keys[(layer, kind)] = prefix + kind
            keys[(layer, "bn_weight")], keys[(layer, "bn_bias")] = (
                prefix + "weight",
                prefix + "bias",
            )
        elif f"{prefix}bias" in state:
            layer += 1
            keys[(layer, "weight")], keys[(layer, "bias")] = prefix + "weight", prefix + "bias"
        elif f"{prefix}weight" in state:
            keys[(layer, "prelu")] = prefix + "weight"
    assert layer == hidden_layers - 1 and batchnorm == any(k[1] == "bn_weight" for k in keys)
    keys[(hidden_layers, "weight")], keys[(hidden_layers, "bias")] = "head.weight", "head.bias"
    return keys


class StackedStep:
    """The stacked program of one SGD step, mixed into :class:`fashionlab.population.Population`
    (which holds the tensors these methods read: ``p``, ``g``, ``s``, ``grads``, ``params``)."""

    def _masks(self, batch: int) -> list[torch.Tensor | None]:
        """Per hidden layer: the (K, B, width) dropout factors (0 or 1/(1-p)), or None."""
        if not any(self.dropout):
            return [None] * self.hidden_layers
        k = len(self.live)
        masks = []
        for layer in range(self.hidden_layers):
            width = self.sizes[layer + 1]
            mask = torch.zeros(k, batch, width, device=self.device)
            for row, p in enumerate(self.dropout):
                member = self.members[self.live[row]]
                if p == 0:
                    mask[row].fill_(1.0)
                    continue
                own = hidden_widths(member.model_config)[layer]
                keep = 1.0 - p
                # as ATen's CPU dropout: noise.bernoulli_(1 - p).div_(1 - p), drawn over the
                # member's own (unpadded) width so its masks do not depend on the population
                noise = torch.empty(batch, own, device=self.device)
                noise.bernoulli_(keep, generator=member.dropout_rng).div_(keep)
                mask[row, :, :own] = noise
            masks.append(mask)
        return masks

    def _forward(
        self, x: torch.Tensor, masks: list[torch.Tensor | None], keep: list | None = None
    ) -> torch.Tensor:
        """Training-mode logits (K, B, C) of minibatches x (K, B, 784), or of one shared
        minibatch x (B, 784); with ``keep``, what the backward needs."""
        k = len(self.live)
        h = x
        for layer in range(self.hidden_layers):
            if keep is not None:
                keep.append(h)
            z = self._linear(h, layer)
            if self.batchnorm:
                w, b = self.p[(layer, "bn_weight")], self.p[(layer, "bn_bias")]
                mean, var = self.s[(layer, "running_mean")], self.s[(layer, "running_var")]
                z = torch.stack(
                    [
                        F.batch_norm(z[r], mean[r], var[r], w[r], b[r], True, 0.1, 1e-5)
                        for r in range(k)
                    ]
                )
            a = self._activate(z, layer)
            if keep is not None:
                keep.append(z if self.activation in ("leaky_relu", "elu", "gelu") else a)
            h = a if masks[layer] is None else a * masks[layer]
        if keep is not None:
            keep.append(h)
        return self._linear(h, self.hidden_layers)

    def _linear(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        if h.dim() == 2:  # the shared minibatch (B, 784) at the first layer
            if self.hand_written:
                return shared_linear(h, self.p[(0, "weight")], self.p[(0, "bias")])
            return SharedLinear.apply(h, self.p[(0, "weight")], self.p[(0, "bias")])
        if self.hand_written:
            return torch.baddbmm(*self.affine[layer], h, self.transposed[layer])
        return StackedLinear.apply(h, self.p[(layer, "weight")], self.p[(layer, "bias")])

    def _activate(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(z)
        if self.activation == "leaky_relu":
            return F.leaky_relu(z, _LEAKY_SLOPE)
        if self.activation == "elu":
            return F.elu(z)
        if self.activation == "gelu":
            return F.gelu(z)
        slope = self.p[(layer, "prelu")].view(-1, 1, 1)
        return torch.where(z > 0, z, slope * z)

    def _activation_backward(self, grad: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
        aten = torch.ops.aten
        if self.activation == "relu":
            return aten.threshold_backward(grad, saved, 0)
        if self.activation == "leaky_relu":
            return aten.leaky_relu_backward(grad, saved, _LEAKY_SLOPE, False)
        if self.activation == "elu":
            return aten.elu_backward(grad, 1.0, 1, 1, False, saved)
        return aten.gelu_backward(grad, saved, approximate="none")

    def _loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean cross-entropy (K,) of x (K, B, 784) and y (K, B), or of one shared
        minibatch x (1, B, 784), y (1, B); the gradients land in ``self.grads`` (or
        ``self.params.grad``)."""
        masks = self._masks(x.shape[1])
        batch = x.shape[1]
        if self.order_rng is not None:  # one minibatch for every member
            x = x[0]
            y = y.expand(len(self.live), -1)
        if not self.hand_written:
            self.params.grad = None
            self.p = self._param_views(self.params)  # fresh views: a new graph each step
            logits = self._forward(x, masks)
            # one cross-entropy per member: the floats fit's loss gives
            losses = torch.stack([F.cross_entropy(z, t) for z, t in zip(logits, y, strict=True)])
            losses.sum().backward()
            self.grads = self.params.grad
            return losses.detach()
        with torch.no_grad():
            saved: list[torch.Tensor] = []
            logits = self._forward(x, masks, saved)
            log_p = torch.log_softmax(logits, -1)
            # one nll_loss per member: the float F.cross_entropy gives (a mean over the rows of
            # a (K, B) tensor sums in another order)
            losses = torch.stack([F.nll_loss(lp, t) for lp, t in zip(log_p, y, strict=True)])
            # d mean(CE) / d logits through the kernels autograd uses: nll's -1/B at the label,
            # then log_softmax's backward
            grad = torch.zeros_like(log_p).scatter_(-1, y.unsqueeze(-1), -1.0 / batch)
            grad = torch.ops.aten._log_softmax_backward_data(grad, log_p, -1, log_p.dtype)
            g = self.g
            h = saved.pop()
            for layer in range(self.hidden_layers, -1, -1):
                if h.dim() == 2:  # the shared minibatch: grad W for all members as one product
                    shared_weight_grad(grad, h, self.g_first)
                else:
                    torch.bmm(grad.transpose(1, 2), h, out=g[(layer, "weight")])
                torch.sum(grad, 1, out=g[(layer, "bias")])
                if layer == 0:
                    break
                grad = torch.bmm(grad, self.p[(layer, "weight")])
                mask = masks[layer - 1]
                if mask is not None:
                    grad = grad * mask
                grad = self._activation_backward(grad, saved.pop())
                h = saved.pop()
        return losses

    @torch.no_grad()
    def _update(self) -> None:
        """SGD in PyTorch's convention, per row: g = grad + l2 * W (matrices only);
        v = momentum * v + g; W -= lr * (g + momentum * v if nesterov else v)."""
        g = self.grads  # ours to change: in place (a new (K, P) tensor per step costs more)
        if self.any_l2:
            g.addcmul_(self.l2, self.params)
        if self.any_momentum:
            self.velocity.mul_(self.momentum).add_(g)
            step = self.velocity
            if self.all_nesterov:
                step = g.addcmul_(self.momentum, step)
            elif self.any_nesterov:
                step = torch.where(self.nesterov, torch.addcmul(g, self.momentum, step), step)
        else:
            step = g
        self.params.addcmul_(self.lr, step, value=-1.0)
