"""The MLP: shapes, He init against its formula, the name registry, refused settings,
checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fashionlab.checkpoint import load_model, save_checkpoint
from fashionlab.errors import ConfigError
from fashionlab.models import ACTIVATIONS, MLP, MODEL_NAMES, build_mlp, model_from_name, model_name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_registered_name_builds_and_round_trips(name: str) -> None:
    model = model_from_name(name)
    assert model.name == name
    assert build_mlp(model.config).config == model.config
    model.eval()
    logits = model(torch.rand(5, 1, 28, 28))  # (B, 1, 28, 28) is flattened like (B, 784)
    assert logits.shape == (5, 10)
    probs = model.predict_proba(torch.rand(5, 784))
    torch.testing.assert_close(probs.sum(1), torch.ones(5))


def test_structure_follows_the_arguments() -> None:
    model = MLP(3, [64, 32, 16], activation="elu", batchnorm=True, dropout=0.25)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 64),
        (64, 32),
        (32, 16),
        (16, 10),
    ]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.ELU) for m in model.modules()) == 3
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25] * 3
    assert model.name == "mlp_3x64-32-16_bn_do0.25_elu"
    assert model_from_name(model.name).config == model.config


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_he_init_variance_matches_the_formula(activation: str) -> None:
    """Var[w] = 2 / ((1 + a^2) fan_in) for hidden layers (He et al. 2015), 1 / fan_in for the
    head."""
    torch.manual_seed(0)
    model = MLP(2, 400, activation=activation)
    slope = ACTIVATIONS[activation][2]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in linears:
        expected = (1.0 if layer is model.head else 2.0 / (1 + slope**2)) / layer.in_features
        n = layer.weight.numel()
        # The sample variance of n normal draws has relative standard error sqrt(2 / n); allow 5 of
        # them.
        tolerance = 5 * math.sqrt(2 / n)
        assert abs(layer.weight.var().item() / expected - 1) < tolerance, (activation, layer)
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"hidden_layers": 0, "units": 50}, "hidden_layers"),
        ({"hidden_layers": 2.0, "units": 50}, "hidden_layers"),
        ({"hidden_layers": 3, "units": 0}, "units >= 1"),
        ({"hidden_layers": 3, "units": [50, 50]}, "one width per layer"),
        ({"hidden_layers": 2, "units": [50, -1]}, "units >= 1"),
        ({"hidden_layers": 2, "units": True}, "units"),
        ({"hidden_layers": 3, "units": 50, "activation": "tanh"}, "unknown activation 'tanh'"),
        ({"hidden_layers": 3, "units": 50, "dropout": 1.0}, "dropout"),
        ({"hidden_layers": 3, "units": 50, "dropout": -0.1}, "dropout"),
        ({"hidden_layers": 3, "units": 50, "in_features": 0}, "in_features"),
    ],
)
def test_impossible_settings_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        MLP(**kwargs)


@pytest.mark.parametrize(
    "name", ["mlp", "mlp_4x", "cnn_4x50", "mlp_0x50", "mlp_4x50_tanh", "mlp_4x50_do1.5"]
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        model_from_name(name)


def test_build_mlp_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="not an MLP config"):
        build_mlp({"hidden_layers": 3, "units": 50, "kernel": 3})


def test_name_and_overrides() -> None:
    assert model_from_name("mlp_4x50", dropout=0.1).config["dropout"] == 0.1
    assert model_name({"hidden_layers": 5, "units": 40}) == "mlp_5x40"


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(1)
    model = model_from_name("mlp_3x32_bn_do0.2_prelu")
    model.train()
    for _ in range(3):  # move the BatchNorm running statistics away from their initial values
        model(torch.rand(16, 784))
    model.eval()
    x = torch.rand(8, 784)
    path = save_checkpoint(
        tmp_path / "model.pt", model, kind="mlp", config=model.config, metrics={"a": 1}
    )
    loaded = load_model(path, expect_kind="mlp")
    assert isinstance(loaded, MLP) and not loaded.training
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.checkpoint["metrics"] == {"a": 1}
