"""The project's models: the classifier MLP f: R^784 -> R^10 (logits) with a registry of names,
and the dense autoencoder of problem 4.

Names such as ``mlp_4x50``, ``mlp_3x256_bn_do0.1`` or ``mlp_4x50_elu`` build models, so
configs, the CLI and tests can loop over them::

    mlp_{hidden_layers}x{units}[_bn][_do{dropout}][_{activation}]

``units`` is one width (``mlp_4x50``) or one width per layer joined by '-' (``mlp_3x512-256-128``).
``MODEL_NAMES`` lists the named models that tests and docs loop over.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .validation import check_int, is_int, is_number

__all__ = [
    "ACTIVATIONS",
    "MODEL_NAMES",
    "MLP",
    "Autoencoder",
    "build_mlp",
    "build_autoencoder",
    "model_from_name",
    "model_name",
]

# name -> (constructor, nonlinearity and parameter for the He gain of kaiming_normal_)
ACTIVATIONS: dict[str, tuple[Any, str, float]] = {
    "relu": (nn.ReLU, "relu", 0.0),
    "leaky_relu": (lambda: nn.LeakyReLU(0.01), "leaky_relu", 0.01),
    # PReLU starts at slope 0.25 (torch's default), so its He gain is 2 / (1 + 0.25^2).
    "prelu": (nn.PReLU, "leaky_relu", 0.25),
    # ELU and GELU have no closed-form gain; the ReLU gain is the usual choice.
    "elu": (nn.ELU, "relu", 0.0),
    "gelu": (nn.GELU, "relu", 0.0),
}

# Models the CLI, docs and tests name: the assignment's space (3-5 hidden layers, <= 50 units)
# and the variants of the second search (BatchNorm, Dropout, other activations, wider layers).
MODEL_NAMES: tuple[str, ...] = (
    "mlp_3x30",
    "mlp_4x50",
    "mlp_5x40",
    "mlp_4x50_leaky_relu",
    "mlp_4x50_elu",
    "mlp_4x50_prelu",
    "mlp_3x256_bn",
    "mlp_3x256_bn_do0.1",
    "mlp_2x512_bn_do0.2_elu",
    "mlp_3x512-256-128_bn_do0.1_prelu",
)


class MLP(nn.Module):
    """ReLU-family MLP: [Linear -> (BatchNorm) -> activation -> (Dropout)] x L -> Linear(10).

    Args:
        hidden_layers: number of hidden layers L >= 1.
        units: width of every hidden layer (int) or one width per layer (sequence of L ints).
        activation: one of ``ACTIVATIONS``.
        batchnorm: BatchNorm1d after each hidden Linear (before the activation).
        dropout: dropout probability in [0, 1) after each hidden activation.

    Raises:
        ConfigError: any impossible setting, before a single weight is created.
    """

    def __init__(
        self,
        hidden_layers: int,
        units: int | Sequence[int],
        activation: str = "relu",
        batchnorm: bool = False,
        dropout: float = 0.0,
        in_features: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        widths = _check(hidden_layers, units, activation, dropout)
        for label, value in (("in_features", in_features), ("num_classes", num_classes)):
            check_int(label, value, 1)
        self.config: dict[str, Any] = {
            "hidden_layers": hidden_layers,
            "units": units if isinstance(units, int) else list(widths),
            "activation": activation,
            "batchnorm": bool(batchnorm),
            "dropout": float(dropout),
            "in_features": in_features,
            "num_classes": num_classes,
        }
        make_activation, nonlinearity, slope = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        fan_in = in_features
        for width in widths:
            linear = nn.Linear(fan_in, width)
            # He et al. 2015: Var[w] = gain^2 / fan_in keeps activation variance constant.
            nn.init.kaiming_normal_(
                linear.weight, a=slope, mode="fan_in", nonlinearity=nonlinearity
            )
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(make_activation())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(fan_in, num_classes)
        # No nonlinearity follows the head, so its gain is 1 (Var[w] = 1 / fan_in).
        nn.init.kaiming_normal_(self.head.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 10) for images (B, 784) or (B, 1, 28, 28)."""
        return self.head(self.body(x.flatten(1)))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities softmax(f(x)), (B, 10)."""
        return torch.softmax(self.forward(x), dim=1)

    @property
    def name(self) -> str:
        return model_name(self.config)


def _check(hidden_layers: Any, units: Any, activation: Any, dropout: Any) -> list[int]:
    check_int("hidden_layers", hidden_layers, 1)
    if is_int(units):
        widths = [units] * hidden_layers
    elif isinstance(units, Sequence) and not isinstance(units, str):
        widths = list(units)
        if len(widths) != hidden_layers:
            raise ConfigError(
                f"units lists {len(widths)} widths for {hidden_layers} hidden layers; "
                f"give one width per layer or a single integer"
            )
    else:
        raise ConfigError(f"units must be an integer or a list of integers, got {units!r}")
    if any(not is_int(w) or w < 1 for w in widths):
        raise ConfigError(f"every hidden layer needs units >= 1, got {units!r}")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    if not is_number(dropout) or not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    return widths


def build_mlp(config: dict[str, Any]) -> MLP:
    """Rebuild an :class:`MLP` from its ``config`` dict (the checkpoint builder).

    Raises:
        ConfigError: unknown keys or an impossible setting.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"an MLP config must be a dict, got {type(config).__name__}")
    try:
        return MLP(**config)
    except TypeError as exc:
        raise ConfigError(f"not an MLP config: {config} ({exc})") from exc


_NAME = re.compile(
    r"^mlp_(?P<layers>\d+)x(?P<units>\d+(?:-\d+)*)(?P<bn>_bn)?(?:_do(?P<do>0?\.\d+|0))?"
    r"(?:_(?P<act>[a-z_]+))?$"
)


def model_from_name(name: str, **overrides: Any) -> MLP:
    """Build a model from a registry name such as ``mlp_4x50`` or ``mlp_3x256_bn_do0.1_elu``.

    Args:
        name: ``mlp_{layers}x{units}[_bn][_do{p}][_{activation}]``; units may be ``512-256-128``.
        overrides: keyword arguments of :class:`MLP` that replace what the name says.

    Raises:
        ConfigError: a name that does not parse, or an impossible setting.
    """
    match = _NAME.match(name)
    if match is None:
        raise ConfigError(
            f"unknown model name {name!r}; expected "
            "mlp_<layers>x<units>[_bn][_do<p>][_<activation>], e.g. mlp_4x50 or "
            "mlp_3x256_bn_do0.1_elu"
        )
    widths = [int(w) for w in match["units"].split("-")]
    config: dict[str, Any] = {
        "hidden_layers": int(match["layers"]),
        "units": widths[0] if len(widths) == 1 else widths,
        "batchnorm": match["bn"] is not None,
        "dropout": float(match["do"] or 0.0),
        "activation": match["act"] or "relu",
    }
    config.update(overrides)
    return MLP(**config)


def model_name(config: dict[str, Any]) -> str:
    """The registry name of an MLP config (per-layer widths are joined with '-')."""
    units = config["units"]
    width = str(units) if isinstance(units, int) else "-".join(map(str, units))
    name = f"mlp_{config['hidden_layers']}x{width}"
    if config.get("batchnorm"):
        name += "_bn"
    if config.get("dropout"):
        name += f"_do{config['dropout']:g}"
    if config.get("activation", "relu") != "relu":
        name += f"_{config['activation']}"
    return name


# --- the autoencoder (problem 4) --------------------------------------------------------------


class Autoencoder(nn.Module):
    """Dense autoencoder ``input_dim - hidden_units - code_units - hidden_units - input_dim``.

    Defaults are the assignment's 784-128-64-128-784 with ReLU and a sigmoid output.
    """

    def __init__(self, input_dim: int = 784, hidden_units: int = 128, code_units: int = 64) -> None:
        super().__init__()
        for name, value in (
            ("input_dim", input_dim),
            ("hidden_units", hidden_units),
            ("code_units", code_units),
        ):
            check_int(f"Autoencoder {name}", value, 1)
        self.input_dim, self.hidden_units, self.code_units = input_dim, hidden_units, code_units
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, code_units),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code_units, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, input_dim),
            nn.Sigmoid(),
        )

    @property
    def config(self) -> dict[str, int]:
        """The keyword arguments that rebuild this architecture (stored in checkpoints)."""
        return {
            "input_dim": self.input_dim,
            "hidden_units": self.hidden_units,
            "code_units": self.code_units,
        }

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) pixels -> (B, code_units) non-negative codes."""
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """(B, code_units) codes -> (B, input_dim) pixels in (0, 1)."""
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) -> (B, input_dim) reconstruction."""
        return self.decoder(self.encoder(x))


def build_autoencoder(config: dict[str, Any]) -> Autoencoder:
    """Rebuild an :class:`Autoencoder` from its ``config`` dict (the checkpoint builder).

    Raises:
        ConfigError: ``config`` does not describe an autoencoder (e.g. an MLP config).
    """
    try:
        return Autoencoder(**config)
    except TypeError as exc:
        raise ConfigError(
            f"not an autoencoder config: {config} ({exc}); expected keys "
            f"input_dim, hidden_units, code_units"
        ) from exc
