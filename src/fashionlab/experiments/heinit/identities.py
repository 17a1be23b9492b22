"""He initialization (He et al. 2015): every step of the variance derivation checked by Monte Carlo.

Each identity of the derivation (``report/derivation.typ``) is estimated on both sides from
``samples`` seeded draws, under its assumptions and under broken ones (weights with a non-zero mean,
a bias ``b != 0``, inputs correlated with each other or with the weights, zero-mean but skewed
weights). Standard errors come from the method of batch means: the draws are split into
``batches`` independent batches, each gives an estimate ``lhs_b - rhs_b`` of the difference, and
``SE = std_b(lhs_b - rhs_b) / sqrt(batches)`` (this handles the correlation of the two sides, which
are computed from the same draws, and non-linear right sides). An identity *holds* when the
interval ``(lhs - rhs) +- z * SE`` contains 0. A cross-check compares
``torch.nn.init.kaiming_normal_`` with ``2 / ((1 + a^2) fan_in)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ...runtime import seed_everything
from ...threads import DEFAULT_THREADS, torch_threads
from .config import HeInitConfig
from .depth import init_std

__all__ = ["IdentityCheck", "KaimingCheck", "HeInitResult", "verify_he_init", "kaiming_cross_check"]


@dataclass(frozen=True)
class IdentityCheck:
    """Both sides of one identity in one setting; ``ci_low``/``ci_high`` bound lhs - rhs."""

    name: str
    step: str
    case: str
    formula: str
    formula_typst: str
    assumptions: str
    expected_to_hold: bool
    lhs: float
    rhs: float
    std_error: float
    z: float
    samples: int
    difference: float = field(init=False)
    ci_low: float = field(init=False)
    ci_high: float = field(init=False)
    z_score: float = field(init=False)
    holds: bool = field(init=False)

    def __post_init__(self) -> None:
        diff = self.lhs - self.rhs
        derived = {
            "difference": diff,
            "ci_low": diff - self.z * self.std_error,
            "ci_high": diff + self.z * self.std_error,
            "z_score": diff / self.std_error
            if self.std_error > 0
            else math.copysign(math.inf, diff),
        }
        derived["holds"] = derived["ci_low"] <= 0.0 <= derived["ci_high"]
        for key, value in derived.items():
            object.__setattr__(self, key, value)  # frozen: derived fields are set once, here

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` row (non-finite numbers as None: JSON has no inf)."""
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in dataclasses.asdict(self).items()
            if k != "z"
        }


@dataclass(frozen=True)
class KaimingCheck:
    """Empirical variance of ``torch.nn.init.kaiming_normal_`` against 2 / ((1 + a^2) fan_in)."""

    nonlinearity: str
    negative_slope: float
    fan_in: int
    fan_out: int
    expected_var: float
    empirical_var: float
    ci_low: float
    ci_high: float
    gain: float
    expected_gain: float

    @property
    def holds(self) -> bool:
        return self.ci_low <= self.expected_var <= self.ci_high and math.isclose(
            self.gain, self.expected_gain
        )


@dataclass(frozen=True)
class HeInitResult:
    """Result of :func:`verify_he_init`: the identity table and the kaiming cross-check."""

    config: HeInitConfig
    identities: tuple[IdentityCheck, ...]
    kaiming: tuple[KaimingCheck, ...]

    def unexpected(self) -> list[IdentityCheck]:
        """Rows whose verdict differs from what the assumptions predict (empty when all is well)."""
        return [row for row in self.identities if row.holds != row.expected_to_hold]


# --- Monte-Carlo identity checks ------------------------------------------------------------------

Base = dict[str, torch.Tensor]
Draw = Callable[[Base], tuple[torch.Tensor, ...]]
Stat = Callable[..., tuple[torch.Tensor, torch.Tensor]]

FORMULAS = {  # name -> (step, plain text, Typst math)
    "sum_variance": (
        "1",
        "Var[Σ_j w_j x_j] = n Var[w x]",
        'op("Var")[sum_(j=1)^n w_j x_j] = n op("Var")[w x]',
    ),
    "product_variance": (
        "2",
        "Var[AB] = Var[A]Var[B] + Var[A]E[B]² + Var[B]E[A]²",
        'op("Var")[A B] = op("Var")[A] op("Var")[B] + op("Var")[A] bb(E)[B]^2 '
        '+ op("Var")[B] bb(E)[A]^2',
    ),
    "product_variance_zero_mean": (
        "2",
        "Var[w x] = Var[w] E[x²]",
        'op("Var")[w x] = op("Var")[w] bb(E)[x^2]',
    ),
    "relu_mean": ("3a", "E[z_{l-1} | x_{l-1}] = 0", "bb(E)[z_(l-1) | x_(l-1)] = 0"),
    "relu_symmetry": (
        "3c-d",
        "E[z² 1{z>0}] = E[z² 1{z<0}]",
        "bb(E)[z_(l-1)^2 bb(1)_(z_(l-1) > 0)] = bb(E)[z_(l-1)^2 bb(1)_(z_(l-1) < 0)]",
    ),
    "relu_zero_probability": ("3e", "P(x_l = 0) = P(z_{l-1} ≤ 0) = ½", "P(z_(l-1) <= 0) = 1/2"),
    "relu_second_moment": ("3", "Var[z_{l-1}] = 2 E[x_l²]", 'op("Var")[z_(l-1)] = 2 bb(E)[x_l^2]'),
    "he_layer_gain": (
        "3+",
        "Var[z_l] = ½ n Var[w] Var[z_{l-1}]",
        'op("Var")[z_l] = 1/2 n_l op("Var")[w_l] op("Var")[z_(l-1)]',
    ),
}


def _base_draws(gen: torch.Generator, m: int, n: int) -> Base:
    """Standard draws of one batch that every row transforms (common random numbers: between two
    cases of an identity only the broken assumption changes, and the costly draws are made once).

    float32 draws: half the bytes of float64 and cheaper to make; their rounding (~1e-7) is far
    below the Monte-Carlo error (~1e-3), and the batch estimates are averaged in float64.
    """
    return {
        "w": torch.randn(m, n, generator=gen),  # weights, scaled per row
        "u": torch.randn(m, n, generator=gen),  # inputs x = ReLU(u), as after a ReLU layer
        "shared": torch.randn(m, 1, generator=gen),  # common factor of correlated inputs
        "exp": torch.empty(m, 1).exponential_(generator=gen),  # skewed zero-mean weights Exp(1) - 1
        # n^2 weights per draw: 1/8 of the draws keeps the two-layer rows' cost near the others'
        "w_prev": torch.randn(max(m // 8, 2), n, n, generator=gen),
    }


class _Draws:
    """The draws and statistics that the rows of :func:`_specs` combine, for fan-in ``n`` and
    He's weight standard deviation."""

    def __init__(self, c: HeInitConfig) -> None:
        self.n, self.rho = c.fan_in, c.input_correlation
        self.std = math.sqrt(2 / self.n)  # He et al. 2015, eq. (10)

    def inputs(self, b: Base, correlated: bool = False) -> torch.Tensor:
        rho = self.rho
        u = math.sqrt(rho) * b["shared"] + math.sqrt(1 - rho) * b["u"] if correlated else b["u"]
        return u.clamp_min(0)

    def products(self, wmean: float, correlated: bool) -> Draw:
        return lambda b: ((wmean + self.std * b["w"]) * self.inputs(b, correlated),)

    def sum_var(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return p.sum(1).var(), self.n * p.var()

    def pair(self, wmean: float, dependent: bool) -> Draw:  # m * n scalar (w, x) pairs
        rho, std = self.rho, self.std

        def draw(b: Base) -> tuple[torch.Tensor, ...]:
            # dependent: the input "sees" its own weight, so E[w^2 x^2] != E[w^2] E[x^2]
            u = rho * b["w"] + math.sqrt(1 - rho**2) * b["u"] if dependent else b["u"]
            return (wmean + std * b["w"]).flatten(), u.clamp_min(0).flatten()

        return draw

    def preact(
        self, wmean: float = 0.0, bias: float = 0.0, skewed: bool = False, cubed: bool = False
    ) -> Draw:
        inputs, std = self.inputs, self.std
        if skewed:
            return lambda b: ((math.sqrt(2) * (b["exp"] - 1) * inputs(b)[:, :1]).sum(1),)
        if cubed:  # E[g^6] = 15: the same variance as the Gaussian weights
            return lambda b: ((std * b["w"] ** 3 / math.sqrt(15) * inputs(b)).sum(1),)
        return lambda b: (((wmean + std * b["w"]) * inputs(b)).sum(1) + bias,)

    def two_layers(self, bias: float) -> Draw:
        inputs, std = self.inputs, self.std

        def draw(b: Base) -> tuple[torch.Tensor, ...]:
            k = len(b["w_prev"])  # fresh weights W_{l-1} per draw: the expectation is over w and x
            z_prev = (std * b["w_prev"] * inputs(b)[:k].unsqueeze(1)).sum(-1) + bias  # (k, n)
            return (std * b["w"][:k] * z_prev.clamp_min(0)).sum(1), z_prev  # z_l: (k,)

        return draw

    def gain(self, z: torch.Tensor, z_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z.var(), self.n * self.std**2 / 2 * z_prev.var()  # (= Var[z_prev] for He)


def _product_general(w: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (w * x).var(), w.var() * x.var() + w.var() * x.mean() ** 2 + x.var() * w.mean() ** 2


def _product_zero_mean(w: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (w * x).var(), w.var() * (x**2).mean()


def _mean_zero(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z.mean(), torch.zeros(())


def _halves(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (z.clamp_min(0) ** 2).mean(), (z.clamp_max(0) ** 2).mean()


def _relu_var(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z.var(), 2 * (z.clamp_min(0) ** 2).mean()


def _off(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (z <= 0).double().mean(), torch.tensor(0.5)  # x_l = 0


def _specs(c: HeInitConfig, xi: torch.Tensor) -> list[tuple[str, str, str, bool, Draw, Stat]]:
    """(name, case, assumptions, expected_to_hold, draw, stat) for every row; ``xi`` a fixed
    input. A declarative table: the draws and statistics are :class:`_Draws` and the ``_``
    functions above."""
    d = _Draws(c)
    n, rho, std = d.n, d.rho, d.std
    mu = c.weight_shift * std
    iid = f"w_j ~ N(0, 2/n) i.i.d., x_j = ReLU(N(0,1)) i.i.d., independent of w, n = {n}"
    corr = f"; x_j = ReLU(u_j), corr(u_j, u_k) = {rho:g} (shared factor)"
    xw = f"x = ReLU({rho:g} w/σ_w + {math.sqrt(1 - rho**2):.2f} ε): x correlated with w"
    skew = "w = √2 (Exp(1) − 1): zero mean, variance 2/n, but skewed; n = 1"
    # Step 3(b) holds for any symmetric weight density: a cubed normal is symmetric, not Gaussian.
    cubed = "w = σ_w g³/√15, g ~ N(0,1): symmetric, variance 2/n, heavy-tailed; " + (
        f"x_j = ReLU(N(0,1)) i.i.d., independent of w, n = {n}"
    )
    shift = f"E[w] = {c.weight_shift:g} σ_w"
    return [
        ("sum_variance", "i.i.d. inputs", iid, True, d.products(0.0, False), d.sum_var),
        (
            "sum_variance",
            "E[w] ≠ 0, i.i.d. inputs",
            f"as above but {shift}",
            True,
            d.products(mu, False),
            d.sum_var,
        ),
        (
            "sum_variance",
            "correlated inputs",
            "w_j ~ N(0, 2/n)" + corr,
            True,
            d.products(0.0, True),
            d.sum_var,
        ),
        (
            "sum_variance",
            "E[w] ≠ 0, correlated inputs",
            shift + corr,
            False,
            d.products(mu, True),
            d.sum_var,
        ),
        (
            "product_variance",
            "independent, E[w] ≠ 0",
            f"w ~ N({c.weight_shift:g} σ_w, σ_w²) independent of x = ReLU(N(0,1))",
            True,
            d.pair(mu, False),
            _product_general,
        ),
        (
            "product_variance",
            "x correlated with w",
            f"{shift}; {xw}",
            False,
            d.pair(mu, True),
            _product_general,
        ),
        (
            "product_variance_zero_mean",
            "independent, E[w] = 0",
            "w ~ N(0, 2/n) independent of x = ReLU(N(0,1))",
            True,
            d.pair(0.0, False),
            _product_zero_mean,
        ),
        (
            "product_variance_zero_mean",
            "E[w] ≠ 0",
            f"{shift}, x independent of w",
            False,
            d.pair(mu, False),
            _product_zero_mean,
        ),
        (
            "product_variance_zero_mean",
            "x correlated with w",
            f"E[w] = 0; {xw}",
            False,
            d.pair(0.0, True),
            _product_zero_mean,
        ),
        (
            "relu_mean",
            "E[w] = 0, b = 0",
            "one fixed input x_{l-1}; w_j ~ N(0, 2/n)",
            True,
            lambda b: (std * b["w"] @ xi,),
            _mean_zero,
        ),
        (
            "relu_mean",
            "E[w] ≠ 0",
            f"one fixed input x_{{l-1}}; {shift}",
            False,
            lambda b: ((mu + std * b["w"]) @ xi,),
            _mean_zero,
        ),
        ("relu_symmetry", "symmetric w, b = 0", iid, True, d.preact(), _halves),
        ("relu_symmetry", "skewed w (zero mean)", skew, False, d.preact(skewed=True), _halves),
        ("relu_symmetry", "symmetric non-Gaussian w", cubed, True, d.preact(cubed=True), _halves),
        ("relu_zero_probability", "symmetric w, b = 0", iid, True, d.preact(), _off),
        (
            "relu_zero_probability",
            "symmetric non-Gaussian w",
            cubed,
            True,
            d.preact(cubed=True),
            _off,
        ),
        (
            "relu_zero_probability",
            "b ≠ 0",
            f"as above with b = {c.bias:g}",
            False,
            d.preact(bias=c.bias),
            _off,
        ),
        ("relu_zero_probability", "skewed w (zero mean)", skew, False, d.preact(skewed=True), _off),
        ("relu_second_moment", "symmetric w, b = 0", iid, True, d.preact(), _relu_var),
        (
            "relu_second_moment",
            "symmetric non-Gaussian w",
            cubed,
            True,
            d.preact(cubed=True),
            _relu_var,
        ),
        (
            "relu_second_moment",
            "b ≠ 0",
            f"as above with b = {c.bias:g}",
            False,
            d.preact(bias=c.bias),
            _relu_var,
        ),
        (
            "relu_second_moment",
            "E[w] ≠ 0",
            f"as above with {shift}",
            False,
            d.preact(wmean=mu),
            _relu_var,
        ),
        (
            "relu_second_moment",
            "skewed w (zero mean)",
            skew,
            False,
            d.preact(skewed=True),
            _relu_var,
        ),
        (
            "he_layer_gain",
            "He, b = 0",
            "two layers, fresh W ~ N(0, 2/n) per draw, x_{l-1} = ReLU(N(0,1))",
            True,
            d.two_layers(0.0),
            d.gain,
        ),
        (
            "he_layer_gain",
            "b ≠ 0 in layer l-1",
            f"as above with b = {c.bias:g} in layer l-1",
            False,
            d.two_layers(c.bias),
            d.gain,
        ),
    ]


@torch_threads(DEFAULT_THREADS)  # its Monte-Carlo sums: the same on any caller's setting
def verify_he_init(config: HeInitConfig | None = None, *, progress: bool = False) -> HeInitResult:
    """Estimate both sides of every identity of the He derivation, with batch-means intervals.

    Args:
        config: sample sizes, the broken-assumption settings and the seed (default
            ``HeInitConfig()``).
        progress: show a tqdm bar over the batches.

    Returns:
        ``HeInitResult`` with one ``IdentityCheck`` per (identity, case) and the kaiming
        cross-check.
    """
    config = config or HeInitConfig()
    gen = seed_everything(config.seed)
    specs = _specs(config, xi=torch.randn(config.fan_in, generator=gen).clamp_min(0))
    sides = torch.zeros(
        config.batches, len(specs), 2, dtype=torch.float64
    )  # lhs_b, rhs_b per batch and row
    samples = [0] * len(specs)
    for batch in tqdm(range(config.batches), desc="identities", disable=not progress, leave=False):
        base = _base_draws(gen, config.samples // config.batches, config.fan_in)
        for i, (*_, draw, stat) in enumerate(specs):
            data = draw(base)
            sides[batch, i] = torch.stack(stat(*data))
            samples[i] += len(data[0])
    lhs, rhs = sides.mean(0).unbind(-1)
    std_error = (sides[..., 0] - sides[..., 1]).std(0) / math.sqrt(config.batches)
    rows = tuple(
        IdentityCheck(
            name,
            FORMULAS[name][0],
            case,
            *FORMULAS[name][1:],
            assumptions,
            expected,
            lhs[i].item(),
            rhs[i].item(),
            std_error[i].item(),
            config.z,
            samples[i],
        )
        for i, (name, case, assumptions, expected, *_) in enumerate(specs)
    )
    return HeInitResult(
        config,
        rows,
        kaiming_cross_check(config.width, config.negative_slope, z=config.z, seed=config.seed),
    )


def kaiming_cross_check(
    fan_in: int = 256,
    negative_slope: float = 0.2,
    *,
    fan_out: int = 1024,
    z: float = 3.0,
    seed: int = 0,
) -> tuple[KaimingCheck, ...]:
    """Compare ``torch.nn.init.kaiming_normal_`` (mode fan_in) with Var[w] = 2 / ((1 + a^2) fan_in).

    Returns:
        One ``KaimingCheck`` for ReLU and one for LeakyReLU(``negative_slope``).
    """
    gen, checks = seed_everything(seed), []
    for nonlinearity, a in (("relu", 0.0), ("leaky_relu", negative_slope)):
        weight = torch.empty(fan_out, fan_in, dtype=torch.float64)
        torch.nn.init.kaiming_normal_(
            weight, a=a, mode="fan_in", nonlinearity=nonlinearity, generator=gen
        )
        var = weight.var().item()
        m4 = ((weight - weight.mean()) ** 4).mean().item()
        se = math.sqrt(
            max(m4 - var**2, 0.0) / weight.numel()
        )  # delta method for the sample variance
        gain = torch.nn.init.calculate_gain(
            nonlinearity, a if nonlinearity == "leaky_relu" else None
        )
        checks.append(
            KaimingCheck(
                nonlinearity,
                a,
                fan_in,
                fan_out,
                init_std("he", fan_in, fan_out, a) ** 2,
                var,
                var - z * se,
                var + z * se,
                gain,
                math.sqrt(2 / (1 + a**2)),
            )
        )
    return tuple(checks)
