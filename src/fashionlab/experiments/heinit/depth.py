"""Depth experiment of the He-initialization stage (He et al. 2015, sec. 2.2): forward and backward
variances through a deep bias-free ReLU / LeakyReLU MLP for several initialization schemes, in
float64 so that N(0, 1) over 50 layers (~1e105) does not overflow. Written to ``results.json`` by
:func:`~fashionlab.experiments.heinit.stage.run_heinit` (key ``depth``; ``docs/run-directory.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import ConfigError
from ...runtime import seed_everything
from ...threads import DEFAULT_THREADS, torch_threads

__all__ = ["SCHEMES", "SCHEME_LABELS", "init_std", "DepthCurve", "DepthResult", "depth_experiment"]

SCHEMES = ("he", "xavier", "normal_1", "normal_0.01")
SCHEME_LABELS = {
    "he": "He: N(0, 2/((1+a²) n))",
    "xavier": "Xavier/Glorot: N(0, 2/(n_in+n_out))",
    "normal_1": "N(0, 1)",
    "normal_0.01": "N(0, 0.01²)",
    "he_relu_gain": "He with ReLU gain 2 (a ignored)",
}


def init_std(scheme: str, fan_in: int, fan_out: int, negative_slope: float = 0.0) -> float:
    """Standard deviation of a zero-mean Gaussian init; ``negative_slope`` a of LeakyReLU
    (0 = ReLU).

    Raises:
        ConfigError: unknown scheme.
    """
    if scheme == "he":  # He et al. 2015, eq. (10) and (15): n Var[w] (1 + a^2) / 2 = 1
        return math.sqrt(2 / ((1 + negative_slope**2) * fan_in))
    if scheme == "he_relu_gain":
        return math.sqrt(2 / fan_in)
    if scheme == "xavier":  # Glorot & Bengio 2010
        return math.sqrt(2 / (fan_in + fan_out))
    if scheme == "normal_1":
        return 1.0
    if scheme == "normal_0.01":
        return 0.01
    raise ConfigError(
        f"unknown init scheme {scheme!r}; expected one of {SCHEMES + ('he_relu_gain',)}"
    )


@dataclass(frozen=True)
class DepthCurve:
    """Per-layer variances (index l-1 for layer l) of one initialization scheme."""

    scheme: str
    label: str
    std: float
    forward_var: tuple[float, ...]
    backward_var: tuple[float, ...]


@dataclass(frozen=True)
class DepthResult:
    """Result of :func:`depth_experiment` for one activation."""

    activation: str
    negative_slope: float
    depth: int
    width: int
    batch: int
    curves: tuple[DepthCurve, ...]

    def curve(self, scheme: str) -> DepthCurve:
        return next(c for c in self.curves if c.scheme == scheme)


@torch_threads(DEFAULT_THREADS)  # its Monte-Carlo sums: the same on any caller's setting
def depth_experiment(
    activation: str = "relu",
    *,
    depth: int = 50,
    width: int = 256,
    batch: int = 128,
    negative_slope: float = 0.2,
    schemes: tuple[str, ...] | None = None,
    seed: int = 0,
) -> DepthResult:
    """Forward and backward variance through a bias-free MLP of ``depth`` square layers.

    Input x_0 ~ N(0, 1) of shape (batch, width); z_l = x_{l-1} W_l^T, x_l = act(z_l); the loss
    L = sum(z_L * g), g ~ N(0, 1), sends unit-variance gradients back. All schemes scale the same
    standard-normal weights (common random numbers), so curves differ only by the init.

    Args:
        activation: "relu" or "leaky_relu".
        negative_slope: a of LeakyReLU (ignored for ReLU).
        schemes: subset of ``SCHEMES`` (plus "he_relu_gain"); default SCHEMES, plus "he_relu_gain"
            for LeakyReLU.

    Returns:
        ``DepthResult`` with Var[z_l] and Var[dL/dz_l] for l = 1..depth per scheme (inf/NaN on
        overflow).

    Raises:
        ConfigError: unknown activation or scheme, or depth/width/batch < 1.
    """
    if activation not in ("relu", "leaky_relu"):
        raise ConfigError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")
    if min(depth, width, batch) < 1:
        raise ConfigError(f"depth, width and batch must be >= 1, got {depth}, {width}, {batch}")
    slope = negative_slope if activation == "leaky_relu" else 0.0
    if schemes is None:
        schemes = SCHEMES + (("he_relu_gain",) if activation == "leaky_relu" else ())
    gen = seed_everything(seed)
    x0 = torch.randn(batch, width, generator=gen, dtype=torch.float64)
    g = torch.randn(batch, width, generator=gen, dtype=torch.float64)
    base = torch.randn(
        depth, width, width, generator=gen, dtype=torch.float64
    )  # (L, fan_out, fan_in)
    curves = []
    for scheme in schemes:
        std = init_std(scheme, width, width, slope)
        x, pre = x0, []
        with torch.enable_grad():
            for layer in range(depth):
                z = x @ (std * base[layer]).T  # (batch, width)
                if layer == 0:
                    z.requires_grad_()  # a leaf: its .grad is filled by backward
                else:
                    z.retain_grad()
                pre.append(z)
                x = torch.nn.functional.leaky_relu(z, slope) if slope else torch.relu(z)
            (pre[-1] * g).sum().backward()
        curves.append(
            DepthCurve(
                scheme,
                SCHEME_LABELS[scheme],
                std,
                tuple(z.detach().var().item() for z in pre),
                tuple(z.grad.var().item() for z in pre),
            )
        )
    return DepthResult(activation, slope, depth, width, batch, tuple(curves))
