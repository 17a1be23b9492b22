"""Batched evaluation of the loss on the plane: many parameter vectors per forward pass
(``torch.func.functional_call`` + ``vmap``), in chunks sized from a memory budget, with BatchNorm in
eval mode and dropout off; a raw-input ``Linear``/``Conv`` is factorised as ``z0 + a z1 + b z2``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...runtime import eval_mode, resolve_device
from ...validation import is_number
from .trajectory import _buffer_layout, _Layout

__all__ = ["evaluate_points", "plane_losses"]

_PARAM_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _PlaneInput(nn.Module):
    """Stands in for a parameter-linear input layer: layer(X; c + a d1 + b d2) =
    z0 + a z1 + b z2."""

    def __init__(self, z: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("z", z)  # (3, N, ...) from (c, d1, d2)
        self.register_buffer("coords", torch.zeros(2, dtype=z.dtype, device=z.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z[0] + self.coords[0] * self.z[1] + self.coords[1] * self.z[2]


class _Evaluator:
    """f(theta) for many parameter vectors of one module: functional_call + vmap, chunked by
    memory."""

    def __init__(
        self,
        model: nn.Module,
        X: torch.Tensor,
        y: torch.Tensor,
        *,
        criterion: Callable | None,
        memory_budget_mb: float,
        device: str | torch.device,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not (torch.is_tensor(X) and torch.is_tensor(y)) or len(X) != len(y) or len(X) == 0:
            raise ConfigError(
                f"X and y must be tensors with the same number (>= 1) of examples, got "
                f"{getattr(X, 'shape', type(X))} and {getattr(y, 'shape', type(y))}"
            )
        if not (is_number(memory_budget_mb, finite=True) and memory_budget_mb > 0):
            raise ConfigError(f"memory_budget_mb must be a number > 0, got {memory_budget_mb!r}")
        named = list(model.named_parameters())
        if (
            not named
            or len({p.dtype for _, p in named}) != 1
            or not named[0][1].is_floating_point()
        ):
            raise ConfigError("the model needs floating-point parameters of one dtype")
        self.model, self.device, self.dtype = model, resolve_device(device), named[0][1].dtype
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.n_params = sum(self.numels)
        self.buffers = {n: b.detach().to(self.device) for n, b in model.named_buffers()}
        self.X = X.to(self.device, self.dtype) if X.is_floating_point() else X.to(self.device)
        self.y, self.n = y.to(self.device), len(X)
        self.criterion = criterion or F.cross_entropy
        self.budget = float(memory_budget_mb) * 2**20
        self.elem = torch.finfo(self.dtype).bits // 8
        with eval_mode(model):
            self.per_example, self.input_layer, self._input_shape = self._probe()
        self.points_per_chunk, self.examples_per_chunk = self._plan()
        self._fast: dict[
            tuple[int, int], tuple[Any, ...]
        ] = {}  # factorised models per (centre, directions)

    def _probe(self) -> tuple[float, str | None, tuple[int, ...]]:
        """One small forward pass: activation floats per example, and a raw-input Linear/Conv if
        any."""
        x = self.X[: min(self.n, 16)].contiguous()
        sizes: list[int] = []
        seen: dict[str, list[torch.Tensor]] = {}
        add_out = lambda _m, _a, out: sizes.extend(  # noqa: E731
            t.numel()
            for t in (out if isinstance(out, (tuple, list)) else (out,))
            if torch.is_tensor(t)
        )
        handles = [m.register_forward_hook(add_out) for m in self.model.modules()]
        for name, module in self.model.named_modules():
            if isinstance(module, _PARAM_LINEAR):
                handles.append(
                    module.register_forward_pre_hook(
                        lambda _m, args, name=name: seen.setdefault(name, []).append(
                            args[0] if args else None
                        )
                    )
                )
        params = {n: p.detach().to(self.device) for n, p in self.model.named_parameters()}
        try:
            with torch.no_grad():
                torch.func.functional_call(self.model, (params, self.buffers), (x,))
        finally:
            for handle in handles:
                handle.remove()
        # Without autograd only a few activations are alive at once: 4x the largest one bounds the
        # peak (X itself is shared by all points of a chunk and not counted).
        per_example = 4 * max(sizes, default=1) / len(x)
        for name, inputs in seen.items():
            own = [n for n, _ in self.model.get_submodule(name).named_parameters()]
            if (
                len(inputs) == 1
                and torch.is_tensor(inputs[0])
                and inputs[0].data_ptr() == x.data_ptr()
                and inputs[0].numel() == x.numel()
                and inputs[0].is_contiguous()
                and all(f"{name}.{n}" in params for n in own)
                and set(own) <= {"weight", "bias"}
            ):
                return per_example, name, tuple(inputs[0].shape[1:])
        return per_example, None, ()

    def _plan(self) -> tuple[int, int]:
        """(grid points per chunk, examples per chunk) so that one chunk fits the memory budget."""
        per_point_example = self.per_example * self.elem
        per_point = self.n_params * (
            self.elem + 8
        )  # the parameter row and its float64 construction
        points = int(self.budget // (per_point + self.n * per_point_example))
        if points >= 1:
            return points, self.n
        examples = int((self.budget - per_point) // per_point_example)
        if examples < 1:
            need = (per_point + per_point_example) / 2**20
            raise ConfigError(
                f"memory_budget_mb={self.budget / 2**20:g} is too small for one grid point of this "
                f"model ({need:.2f} MB); raise memory_budget_mb"
            )
        return 1, examples

    def _vmapped(
        self,
        model: nn.Module,
        names: list[str],
        extra_buffer: str | None,
        buffer_layout: _Layout | None = None,
    ) -> Callable:
        """vmap over (theta, extra) of loss(theta, extra, x, y); ``extra`` is the coords buffer of
        the factorised layer, the flat floating buffers of a snapshot (``buffer_layout``), or
        unused."""
        numels = [self.numels[self.names.index(n)] for n in names]
        shapes = [self.shapes[self.names.index(n)] for n in names]

        def loss(
            theta: torch.Tensor, extra: torch.Tensor, x: torch.Tensor, y: torch.Tensor
        ) -> torch.Tensor:
            params = {
                n: t.view(s)
                for n, t, s in zip(names, torch.split(theta, numels), shapes, strict=True)
            }
            buffers = dict(self.buffers)
            if extra_buffer is not None:
                buffers[extra_buffer] = extra
            elif buffer_layout is not None:
                b_names, b_numels, b_shapes = buffer_layout
                buffers.update(
                    {
                        n: t.view(s)
                        for n, t, s in zip(
                            b_names, torch.split(extra, b_numels), b_shapes, strict=True
                        )
                    }
                )
            return self.criterion(torch.func.functional_call(model, (params, buffers), (x,)), y)

        return torch.func.vmap(loss, in_dims=(0, 0, None, None))

    def _run(
        self,
        fn: Callable,
        make: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
        count: int,
        progress: bool,
    ) -> np.ndarray:
        from tqdm.auto import tqdm

        out = np.empty(count)
        step, examples = self.points_per_chunk, self.examples_per_chunk
        with (
            torch.no_grad(),
            eval_mode(self.model),
            tqdm(
                total=count, disable=not progress, unit="pt", leave=False, desc="landscape"
            ) as bar,
        ):
            for lo in range(0, count, step):
                hi = min(count, lo + step)
                theta, extra = make(lo, hi)
                if examples >= self.n:
                    values = fn(theta, extra, self.X, self.y)
                else:  # mean over the examples from per-chunk means, weighted by chunk size
                    values = (
                        sum(
                            fn(theta, extra, self.X[s : s + examples], self.y[s : s + examples])
                            * len(self.y[s : s + examples])
                            for s in range(0, self.n, examples)
                        )
                        / self.n
                    )
                out[lo:hi] = values.double().cpu().numpy()
                bar.update(hi - lo)
        return out

    def points(
        self, thetas: np.ndarray, buffers: np.ndarray | None = None, progress: bool = False
    ) -> np.ndarray:
        """Loss at each row of ``thetas`` (K, P), with per-row floating ``buffers`` (K, B) if
        given."""
        thetas_t = torch.as_tensor(thetas)
        use_buffers = buffers is not None and buffers.shape[1] > 0
        buffer_layout = _buffer_layout(self.model)
        if use_buffers and buffers.shape[1] != sum(buffer_layout[1]):
            raise ConfigError(
                f"{buffers.shape[1]} buffer values per snapshot, but the model's floating buffers "
                f"hold {sum(buffer_layout[1])}: record the snapshots from the same architecture"
            )
        buffers_t = (
            torch.as_tensor(buffers) if use_buffers else torch.zeros(len(thetas), 1)
        )  # unused column
        fn = self._vmapped(self.model, self.names, None, buffer_layout if use_buffers else None)
        make = (
            lambda lo, hi: (
                thetas_t[lo:hi].to(self.device, self.dtype),  # noqa: E731
                buffers_t[lo:hi].to(self.device, self.dtype),
            )
        )
        return self._run(fn, make, len(thetas), progress)

    def plane(
        self,
        centre: np.ndarray,
        directions: np.ndarray,
        coords: np.ndarray,
        *,
        factor_input_layer: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        """Loss at ``centre + coords @ directions`` for each row of ``coords`` (M, 2)."""
        # float64 keeps centre + a d1 + b d2 exact to float32 rounding (no float64 on Apple MPS).
        wide = torch.float32 if self.device.type == "mps" else torch.float64
        c = torch.as_tensor(centre, dtype=wide, device=self.device)
        d = torch.as_tensor(directions, dtype=wide, device=self.device)
        coords_t = torch.as_tensor(np.asarray(coords), dtype=wide, device=self.device)
        model, names, extra = self.model, self.names, None
        z_bytes = 3 * self.n * self.per_example * self.elem  # upper bound of the three products
        # The precomputed products cover all examples at once: no factorising when examples are
        # chunked.
        fast = (
            factor_input_layer
            and self.input_layer is not None
            and self.examples_per_chunk >= self.n
            and z_bytes <= self.budget / 2
        )
        self.used_input_layer = self.input_layer if fast else None
        if fast:
            key = (id(centre), id(directions))
            if key not in self._fast:  # keeps centre and directions alive, so the ids stay theirs
                self._fast[key] = (*self._factorised(c, d, wide), centre, directions)
            model, names, extra = self._fast[key][:3]
        keep = [self.names.index(n) for n in names]
        starts = np.cumsum([0, *self.numels])
        index = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in keep]).to(self.device)
        c_kept, d_kept = c[index], d[:, index]  # the factorised layer's parameters are not needed
        fn = self._vmapped(model, names, extra)
        make = (
            lambda lo, hi: (
                (c_kept + coords_t[lo:hi] @ d_kept).to(self.dtype),  # noqa: E731
                coords_t[lo:hi].to(self.dtype),
            )
        )
        return self._run(fn, make, len(coords_t), progress)

    def _factorised(
        self, c: torch.Tensor, d: torch.Tensor, wide: torch.dtype
    ) -> tuple[nn.Module, list[str], str]:
        """A copy of the model whose raw-input layer is replaced by z0 + a z1 + b z2
        (precomputed)."""
        name = self.input_layer
        layer = self.model.get_submodule(name)
        own = [n for n, _ in layer.named_parameters()]
        x = self.X.reshape(self.n, *self._input_shape).to(wide)
        offsets = dict(zip(self.names, np.cumsum([0, *self.numels[:-1]]).tolist(), strict=True))
        views = []
        for vector in (c, d[0], d[1]):
            values = {
                n: vector[
                    offsets[f"{name}.{n}"] : offsets[f"{name}.{n}"] + getattr(layer, n).numel()
                ].view(getattr(layer, n).shape)
                for n in own
            }
            with torch.no_grad():
                views.append(torch.func.functional_call(layer, values, (x,)))
        fast = copy.deepcopy(self.model).eval()
        parent, _, leaf = name.rpartition(".")
        plane_input = _PlaneInput(torch.stack(views).to(self.dtype))
        setattr(fast.get_submodule(parent) if parent else fast, leaf, plane_input)
        return fast, [n for n in self.names if not n.startswith(f"{name}.")], f"{name}.coords"


def evaluate_points(
    model: nn.Module,
    thetas: np.ndarray,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    buffers: np.ndarray | None = None,
    criterion: Callable | None = None,
    memory_budget_mb: float = 128.0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Loss of ``model`` (eval mode) at each flattened parameter vector, batched with vmap.

    Args:
        model: any module; ``thetas`` rows follow ``parameters_to_vector(model.parameters())``.
        thetas: (K, P) parameter vectors.
        X, y: inputs and targets; ``criterion(model(X), y)`` is the mean loss (default
        cross-entropy).
        buffers: (K, B) floating buffers per row (default: the model's own buffers for every row).
        memory_budget_mb: memory for one chunk of points; chunks are sized from it.
        device: where to evaluate.

    Returns:
        (K,) float64 losses.
    """
    evaluator = _Evaluator(
        model, X, y, criterion=criterion, memory_budget_mb=memory_budget_mb, device=device
    )
    return evaluator.points(np.asarray(thetas), buffers)


def plane_losses(
    model: nn.Module,
    centre: np.ndarray,
    directions: np.ndarray,
    coords: np.ndarray,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    criterion: Callable | None = None,
    memory_budget_mb: float = 128.0,
    device: str | torch.device = "cpu",
    factor_input_layer: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Loss at ``centre + a d1 + b d2`` for each row (a, b) of ``coords`` (M, 2); see
    :func:`loss_landscape`."""
    evaluator = _Evaluator(
        model, X, y, criterion=criterion, memory_budget_mb=memory_budget_mb, device=device
    )
    return evaluator.plane(
        centre, directions, coords, factor_input_layer=factor_input_layer, progress=progress
    )
