"""The shared checks of settings (fashionlab.validation) and the configs that use them."""

from __future__ import annotations

import math

import pytest

from fashionlab.errors import ConfigError
from fashionlab.experiments.heinit import HeInitConfig
from fashionlab.models import MLP
from fashionlab.train import TrainConfig
from fashionlab.validation import check_int, is_int, is_number


def test_is_int_refuses_bools_and_floats() -> None:
    assert is_int(0) and is_int(-3) and is_int(2**70)
    assert not any(is_int(v) for v in (True, False, 1.0, "1", None))


def test_is_number_refuses_bools_and_with_finite_nan_and_inf() -> None:
    assert is_number(1) and is_number(0.5) and is_number(math.inf) and is_number(math.nan)
    assert not any(is_number(v) for v in (True, "0.5", None, [1]))
    assert is_number(-2.5, finite=True)
    assert not any(is_number(v, finite=True) for v in (math.inf, -math.inf, math.nan, False))


def test_check_int_names_the_setting_the_value_and_the_range() -> None:
    check_int("epochs", 3, 1)
    check_int("epochs", None, 1, optional=True)
    with pytest.raises(ConfigError, match=r"^epochs must be an integer >= 1, got True$"):
        check_int("epochs", True, 1)
    with pytest.raises(ConfigError, match=r"^epochs must be an integer >= 1 or None, got 0$"):
        check_int("epochs", 0, 1, optional=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainConfig(batch_size=True), r"batch size must be an integer >= 1, got True"),
        (lambda: TrainConfig(lr=math.nan), r"learning rate must be a finite number > 0"),
        (lambda: MLP(False, 50), r"hidden_layers must be an integer >= 1, got False"),
        (lambda: MLP(2, 50, dropout=True), r"dropout must be in \[0, 1\), got True"),
        (lambda: HeInitConfig(batches=30.0), r"HeInitConfig.batches must be an integer >= 30"),
        # Not a TypeError from a comparison with a string: one error line.
        (lambda: HeInitConfig(z="3"), r"HeInitConfig.z must be a positive number"),
        (lambda: HeInitConfig(negative_slope="0.2"), r"HeInitConfig.negative_slope must lie"),
    ],
)
def test_configs_refuse_bools_and_wrong_types_with_one_clear_error(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()
