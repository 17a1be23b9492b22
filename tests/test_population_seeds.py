"""Seeds of one setting as one population (what train_seeds does): seed by seed the same floats
as fit (CPU), dropout included; stopping one model leaves the others as their solo runs; refused
input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from fashionlab.data import FastLoader
from fashionlab.errors import ConfigError
from fashionlab.models import MLP
from fashionlab.population import fit_population, seeded_model
from fashionlab.runtime import seed_everything
from fashionlab.train import FitResult, TrainConfig
from fashionlab.train import fit_module as fit

# about 250 SGD steps on the 2,000 tiny training images
CONFIG = TrainConfig(
    epochs=4, batch_size=32, lr=0.05, momentum=0.9, l2=1e-3, schedule="cosine", seed=99
)


def seeded_models(model_config: dict, seeds: list[int]) -> list[MLP]:
    return [seeded_model(model_config, seed) for seed in seeds]


def fit_seeds(models, train, config: TrainConfig, seeds, **kwargs) -> list[FitResult]:
    """One population of ``models``, model k with ``config`` and seed ``seeds[k]``."""
    return fit_population(models, train, [replace(config, seed=s) for s in seeds], **kwargs)


def _solo(model_config: dict, train, config: TrainConfig, seed: int, val=None, model=None):
    """What a retrain does today for one seed: the seeded model, then fit."""
    model = model if model is not None else seeded_models(model_config, [seed])[0]
    return model, fit(model, train, replace(config, seed=seed), val=val)


def _assert_same(model: MLP, result: FitResult, solo: MLP, solo_result: FitResult) -> None:
    """Bit for bit: every parameter and buffer, every recorded number."""
    state, solo_state = model.state_dict(), solo.state_dict()
    assert state.keys() == solo_state.keys()
    for name, value in state.items():
        assert torch.equal(value, solo_state[name]), name
    assert result.history == solo_result.history
    assert (result.diverged, result.steps) == (solo_result.diverged, solo_result.steps)


# Seconds each: plain and batchnorm-dropout in the fast tier, the other three in the full one.
@pytest.mark.parametrize(
    ("model_config", "seeds"),
    [
        pytest.param({"hidden_layers": 3, "units": 30}, [3, 7, 11], id="plain"),
        pytest.param(
            {"hidden_layers": 2, "units": 20, "batchnorm": True},
            [3, 7],
            id="batchnorm",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {"hidden_layers": 2, "units": 20, "activation": "prelu"},
            [3, 7],
            id="prelu",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {"hidden_layers": 2, "units": 24, "batchnorm": True, "dropout": 0.2},
            [3, 7, 11],
            id="batchnorm-dropout",
        ),
        pytest.param(
            {"hidden_layers": 2, "units": 20, "activation": "elu", "dropout": 0.3},
            [5, 6],
            id="elu-dropout",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_each_seed_is_its_solo_fit(tiny_train_val, model_config: dict, seeds: list[int]) -> None:
    train, val = tiny_train_val
    models = seeded_models(model_config, seeds)
    results = fit_seeds(models, train, CONFIG, seeds, val=val)
    assert len(results) == len(seeds) and results[0].steps == 4 * 63
    for model, result, seed in zip(models, results, seeds, strict=True):
        solo, solo_result = _solo(model_config, train, CONFIG, seed, val)
        _assert_same(model, result, solo, solo_result)
        assert len(result.history.val_acc) == 4 and not result.diverged


def test_the_warmup_stable_decay_schedule_is_fit_s(tiny_train_val) -> None:
    """The schedule the tuned retrain uses: the same learning rate at every step as fit."""
    train, _ = tiny_train_val
    config = replace(CONFIG, schedule="wsd")
    models = seeded_models({"hidden_layers": 3, "units": 30}, [3, 7])
    for model, result, seed in zip(
        models, fit_seeds(models, train, config, [3, 7]), [3, 7], strict=True
    ):
        _assert_same(model, result, *_solo({"hidden_layers": 3, "units": 30}, train, config, seed))


def test_one_seed_and_nesterov_with_a_short_last_batch(tiny_train_val) -> None:
    train, _ = tiny_train_val
    train = train.subset(1001)  # 1001 % 40 = 1: fit drops the last example, so must fit_seeds
    config = replace(CONFIG, epochs=2, batch_size=40, nesterov=True, schedule="constant")
    model_config = {"hidden_layers": 2, "units": 16, "batchnorm": True}
    models = seeded_models(model_config, [8])
    (result,) = fit_seeds(models, train, config, [8])
    assert result.steps == 2 * 25
    _assert_same(models[0], result, *_solo(model_config, train, config, 8))


def test_dropout_repeats_with_its_seeds_and_differs_between_them(tiny_train_val) -> None:
    train, _ = tiny_train_val
    config = replace(CONFIG, epochs=1)
    model_config = {"hidden_layers": 2, "units": 24, "dropout": 0.5}
    first = seeded_models(model_config, [1, 2, 1])
    results = fit_seeds(first, train, config, [1, 2, 1])
    again = seeded_models(model_config, [1, 2, 1])
    results_again = fit_seeds(again, train, config, [1, 2, 1])
    for a, b, ra, rb in zip(first, again, results, results_again, strict=True):
        _assert_same(a, ra, b, rb)
    # the same seed twice in one stack: the same model; another seed: another model
    _assert_same(first[0], results[0], first[2], results[2])
    assert not torch.equal(first[0].head.weight, first[1].head.weight)
    assert results[0].history.train_loss != results[1].history.train_loss


def test_a_diverging_seed_leaves_the_others_as_their_solo_runs(tiny_train_val, caplog) -> None:
    train, val = tiny_train_val
    config = replace(CONFIG, epochs=2, batch_size=50)
    model_config = {"hidden_layers": 2, "units": 20, "dropout": 0.1}
    seeds = [4, 5, 6]
    models = seeded_models(model_config, seeds)
    blown = seeded_models(model_config, [5])[0]
    with torch.no_grad():  # the middle model starts with huge weights: NaN at its fourth step
        models[1].body[0].weight.mul_(1e10)
        blown.body[0].weight.mul_(1e10)
    results = fit_seeds(models, train, config, seeds, val=val)
    assert results[1].diverged and results[1].steps == 3 and "diverged" in caplog.text
    # the diverged model is fit's diverged model: the weights before the step that failed
    _assert_same(models[1], results[1], *_solo(model_config, train, config, 5, val, blown))
    for k in (0, 2):
        assert not results[k].diverged and results[k].steps == 2 * 40
        _assert_same(models[k], results[k], *_solo(model_config, train, config, seeds[k], val))


def test_a_non_finite_validation_loss_stops_only_that_model(tiny_train_val, monkeypatch) -> None:
    import fashionlab.population as population

    train, val = tiny_train_val
    config = replace(CONFIG, epochs=3, batch_size=100, schedule="constant")
    model_config = {"hidden_layers": 2, "units": 20}
    models = seeded_models(model_config, [1, 2])
    real, calls, seen = population.evaluate, [], []

    def evaluate_first_member(model, split, device="cpu"):
        seen.append(model)
        loss, acc = real(model, split, device)
        # member 0 is validated first in each epoch: NaN from its second epoch on
        return (math.nan, acc) if len(seen) == 3 else (loss, acc)

    monkeypatch.setattr(population, "evaluate", evaluate_first_member)
    results = fit_seeds(
        models, train, config, [1, 2], val=val, on_epoch=lambda *args: calls.append(args)
    )
    # epoch 1: both validated; epoch 2: model 0's loss is NaN, it stops; epoch 3: model 1 alone
    assert [(member, epoch) for member, epoch, _, _ in calls] == [(0, 1), (1, 1), (1, 2), (1, 3)]
    assert [calls[0][2], calls[1][2]] == [h.history.val_acc[0] for h in results]
    assert calls[3][2] == results[1].history.val_acc[2]
    assert results[0].diverged and results[0].steps == 2 * 20
    assert not results[1].diverged and results[1].steps == 3 * 20
    solo, solo_result = _solo(model_config, train, config, 2, val)
    _assert_same(models[1], results[1], solo, solo_result)


def test_on_epoch_can_stop_all_and_the_models_keep_their_last_epoch(tiny_train_val) -> None:
    train, val = tiny_train_val
    config = replace(CONFIG, epochs=3, batch_size=100, schedule="constant")
    model_config = {"hidden_layers": 2, "units": 20, "batchnorm": True}

    class Stop(Exception):
        pass

    def stop(member, epoch, acc, loss):
        assert epoch == 1 and 0 < acc < 1 and math.isfinite(loss)
        raise Stop

    models = seeded_models(model_config, [1, 2])
    with pytest.raises(Stop):
        fit_seeds(models, train, config, [1, 2], val=val, on_epoch=stop)
    for model, seed in zip(models, [1, 2], strict=True):
        solo, _ = _solo(model_config, train, replace(config, epochs=1), seed)
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), solo.state_dict().values(), strict=True)
        )


def test_seeded_models_are_the_retrain_initialisation() -> None:
    models = seeded_models({"hidden_layers": 2, "units": 10, "activation": "prelu"}, [0, 9])
    for model, seed in zip(models, [0, 9], strict=True):
        seed_everything(seed)
        reference = MLP(2, 10, activation="prelu")
        for a, b in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.equal(a, b)


def test_epoch_order_is_the_order_iter_serves(tiny_train_val) -> None:
    train, _ = tiny_train_val
    served = FastLoader(train, 64, seed=3)
    ordered = FastLoader(train, 64, seed=3)
    for _ in range(2):  # two epochs: each draws the next permutation
        x = torch.cat([x for x, _ in served])
        order = ordered.epoch_order()
        assert torch.equal(x, train.images[order].reshape(-1, 784).float() / 255)


@pytest.mark.parametrize(
    ("models", "seeds", "config", "fragment"),
    [
        ([], [], CONFIG, "one config per model"),
        ([MLP(2, 10)], [1, 2], CONFIG, "one config per model"),
        ([MLP(2, 10), MLP(3, 10)], [1, 2], CONFIG, "share depth"),
        ([torch.nn.Linear(784, 10)], [1], CONFIG, "MLP models only"),
        ([MLP(2, 10)], [-1], CONFIG, "seed"),
        ([MLP(2, 10)], [1], replace(CONFIG, batch_size=5000), "larger than the training set"),
    ],
)
def test_impossible_input_is_refused(tiny_train_val, models, seeds, config, fragment) -> None:
    train, _ = tiny_train_val
    with pytest.raises(ConfigError, match=fragment):
        fit_seeds(models, train, config, seeds)
