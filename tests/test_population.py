"""The population trainer: against a textbook nn.Module + torch.optim.SGD loop (tolerance), a
member inside a population against the member alone (bit for bit), zero-padding, the
hand-written backward against autograd, divergence, interrupts, forks and checkpoints."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fashionlab import _interrupts
from fashionlab.data import FastLoader
from fashionlab.errors import ConfigError
from fashionlab.models import MLP
from fashionlab.population import (
    Population,
    fit_population,
    max_population,
    population_bytes,
    seeded_model,
)
from fashionlab.train import evaluate
from population_cases import CONFIG, PLAIN, equal_states, max_difference, members


@pytest.mark.parametrize(("momentum", "nesterov", "l2"), [(0.0, False, 0.0), (0.9, True, 1e-3)])
def test_one_member_is_a_textbook_module_trained_with_torch_optim_sgd(
    tiny_train_val, momentum: float, nesterov: bool, l2: float
) -> None:
    """K = 1 against nn.Sequential + torch.optim.SGD (weight decay on the matrices only) on the
    same minibatches: within 1e-5 after 126 steps (the two sum the same terms; last bits may
    differ where a kernel differs, e.g. the loss's backward)."""
    train, _ = tiny_train_val
    config = replace(CONFIG, schedule="constant", momentum=momentum, nesterov=nesterov, l2=l2)
    model = seeded_model(PLAIN, config.seed)
    reference = nn.Sequential(
        nn.Linear(784, 30),
        nn.ReLU(),
        nn.Linear(30, 30),
        nn.ReLU(),
        nn.Linear(30, 30),
        nn.ReLU(),
        nn.Linear(30, 10),
    )
    reference.load_state_dict(
        {k.replace("body.", "").replace("head", "6"): v for k, v in model.state_dict().items()}
    )
    weights = [p for p in reference.parameters() if p.ndim == 2]
    others = [p for p in reference.parameters() if p.ndim < 2]
    optimizer = torch.optim.SGD(
        [{"params": weights, "weight_decay": l2}, {"params": others, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=momentum,
        nesterov=nesterov,
    )
    loader = FastLoader(train, config.batch_size, seed=config.seed)  # the member's order
    for _ in range(config.epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(reference(x), y).backward()
            optimizer.step()
    fit_population([model], train, [config])
    ours = list(model.state_dict().values())
    theirs = list(reference.state_dict().values())
    assert max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True)) < 1e-5


def test_each_member_is_bit_for_bit_itself_alone_and_padding_is_exact(tiny_train_val) -> None:
    train, val = tiny_train_val
    model_configs, configs = members()
    models = [seeded_model(m, c.seed) for m, c in zip(model_configs, configs, strict=True)]
    population = Population(models, configs, train)
    results = population.train(val=val)
    widths = population.sizes[1:-1]
    assert widths == [50, 40]
    for k, (model_config, config) in enumerate(zip(model_configs, configs, strict=True)):
        assert results[k].steps == config.epochs * 63 and not results[k].diverged
        # bit for bit: alone, padded to the population's widths
        model = seeded_model(model_config, config.seed)
        alone = Population([model], [config], train, widths=widths)
        alone_results = alone.train(val=val)
        assert equal_states(population.state_dict(k), alone.state_dict(0))
        assert results[k].history == alone_results[0].history
        # within tolerance: alone and unpadded (the sums run over other, zero, terms)
        plain = Population([seeded_model(model_config, config.seed)], [config], train)
        plain_results = plain.train(val=val)
        assert max_difference(population.state_dict(k), plain.state_dict(0)) < 1e-4
        final = results[k].history.val_acc[-1]
        assert abs(final - plain_results[0].history.val_acc[-1]) * len(val) <= 1


def test_padded_units_stay_exactly_zero(tiny_train_val) -> None:
    train, _ = tiny_train_val
    models = [
        seeded_model({"hidden_layers": 2, "units": 10}, 1),
        seeded_model(PLAIN | {"hidden_layers": 2}, 2),
    ]
    configs = [CONFIG, replace(CONFIG, seed=2)]
    population = Population(models, configs, train)
    population.train(epochs=1)
    first = population.p[(0, "weight")][0]  # (30, 784): rows 10.. are padding
    second = population.p[(1, "weight")][0]  # (30, 30)
    assert torch.count_nonzero(first[10:]) == 0 and torch.count_nonzero(second[:, 10:]) == 0
    assert torch.count_nonzero(second[10:]) == 0
    velocity = population._views(population.velocity, population.slots)
    assert torch.count_nonzero(velocity[(0, "weight")][0][10:]) == 0
    assert torch.count_nonzero(velocity[(1, "weight")][0][:, 10:]) == 0
    assert torch.count_nonzero(population.p[(0, "bias")][0][10:]) == 0
    assert torch.count_nonzero(first[:10]) > 0


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu", "gelu"])
def test_the_hand_written_backward_is_autograd_s(tiny_train_val, activation: str) -> None:
    train, _ = tiny_train_val
    model_configs = [{"hidden_layers": 3, "units": w, "activation": activation} for w in (20, 30)]
    configs = [replace(CONFIG, seed=s) for s in (1, 2)]
    models = [seeded_model(m, c.seed) for m, c in zip(model_configs, configs, strict=True)]
    population = Population(models, configs, train)
    x = train.images[:64].reshape(2, 32, 784).float() / 255
    y = train.labels[:64].reshape(2, 32)
    losses, grads = population.gradients(x, y)
    auto_losses, auto_grads = population.gradients(x, y, autograd=True)
    assert torch.allclose(losses, auto_losses, rtol=0, atol=1e-6)
    assert float((grads - auto_grads).abs().max()) < 3e-8
    # and autograd's on the plain modules themselves
    views = population._views(grads, population.slots)
    for k, model in enumerate(models):
        model.zero_grad()
        F.cross_entropy(model(x[k]), y[k]).backward()
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for layer, linear in enumerate(linears):
            for kind in ("weight", "bias"):
                own = getattr(linear, kind).grad
                padded = views[(layer, kind)][k][tuple(slice(0, d) for d in own.shape)]
                assert float((padded - own).abs().max()) < 3e-8


def test_batchnorm_and_prelu_members_stack_bit_for_bit(tiny_train_val) -> None:
    train, val = tiny_train_val
    for model_config in (
        {"hidden_layers": 2, "units": 20, "batchnorm": True, "dropout": 0.1},
        {"hidden_layers": 2, "units": 20, "activation": "prelu"},
    ):
        configs = [replace(CONFIG, seed=s) for s in (3, 7)]
        models = [seeded_model(model_config, c.seed) for c in configs]
        population = Population(models, configs, train)
        population.train(val=val)
        for k, config in enumerate(configs):
            alone = seeded_model(model_config, config.seed)
            fit_population([alone], train, [config], val=val)
            assert equal_states(population.state_dict(k), alone.state_dict())
            assert population.model(k).state_dict().keys() == alone.state_dict().keys()


def test_a_diverging_member_is_dropped_and_the_others_go_on(tiny_train_val, caplog) -> None:
    train, _ = tiny_train_val
    configs = [replace(CONFIG, seed=1), replace(CONFIG, seed=2, lr=1e6), replace(CONFIG, seed=3)]
    models = [seeded_model(PLAIN, c.seed) for c in configs]
    results = fit_population(models, train, configs)
    assert [r.diverged for r in results] == [False, True, False]
    assert results[1].steps < 63 and all(torch.isfinite(p).all() for p in models[1].parameters())
    assert "diverged" in caplog.text
    for k in (0, 2):
        alone = seeded_model(PLAIN, configs[k].seed)
        alone_result = fit_population([alone], train, [configs[k]])[0]
        assert equal_states(models[k].state_dict(), alone.state_dict())
        assert results[k].history == alone_result.history


class _SignalInFinaliser:
    """Sends SIGTERM to this process from ``__del__``: the handler's exception is swallowed
    there, and only the pending record says a signal came."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        total = 0
        for i in range(10_000):
            total += i


def test_an_interrupt_stops_at_the_next_step(tiny_train_val, tmp_path) -> None:
    train, val = tiny_train_val
    population = Population([seeded_model(PLAIN, 1)], [CONFIG], train)
    path = tmp_path / "population.pt"

    def on_epoch(member: int, epoch: int, val_acc: float, val_loss: float) -> None:
        population.save(path)
        _SignalInFinaliser()  # dropped at once

    with _interrupts.handling(), pytest.raises(_interrupts.Interrupted):
        population.train(val=val, on_epoch=on_epoch)
    assert population.members[0].steps == 63  # not one step of the second epoch
    saved = Population.from_checkpoint(torch.load(path, weights_only=False), train)
    assert saved.members[0].steps == 63
    assert [p.name for p in tmp_path.iterdir()] == ["population.pt"]


def test_a_checkpoint_resumes_bit_for_bit_and_a_fork_is_the_run_of_its_schedule(
    tiny_train_val, tmp_path
) -> None:
    train, val = tiny_train_val
    model_configs, configs = members()
    pairs = list(zip(model_configs, configs, strict=True))
    whole = Population([seeded_model(m, c.seed) for m, c in pairs], configs, train)
    whole.train(val=val)
    first = Population([seeded_model(m, c.seed) for m, c in pairs], configs, train)
    first.train(epochs=1, val=val)
    first.save(tmp_path / "p.pt")
    resumed = Population.from_checkpoint(torch.load(tmp_path / "p.pt", weights_only=False), train)
    resumed.train(val=val)
    for k in range(len(configs)):
        assert equal_states(whole.state_dict(k), resumed.state_dict(k))
        assert whole.results[k].history == resumed.results[k].history
    # a constant-lr trunk forked at epoch 2 into the WSD run of 3 epochs is that run
    wsd = replace(CONFIG, epochs=3)
    trunk = Population(
        [seeded_model(PLAIN, 5)], [replace(wsd, schedule="constant", epochs=9)], train
    )
    trunk.train(epochs=2)
    branch = trunk.fork({0: wsd})
    branch.train()
    direct = Population([seeded_model(PLAIN, 5)], [wsd], train)
    direct.train()
    assert equal_states(branch.state_dict(0), direct.state_dict(0))
    trunk.train(epochs=1)  # the trunk goes on as if no fork had been made
    assert trunk.members[0].epochs == 3 and branch.members[0].epochs == 3
    model = branch.model(0)
    assert isinstance(model, MLP)
    assert evaluate(model, val) == evaluate(direct.model(0), val)


def test_memory_rule_and_refused_input(tiny_train_val) -> None:
    train, _ = tiny_train_val
    # 64 plain models of the widest plain setting at the largest batch: well under 1 GiB
    assert 64 * population_bytes({"hidden_layers": 5, "units": 50}, 256) < 2**30 / 2
    assert max_population([{"hidden_layers": 5, "units": 50}], 256) >= 64
    assert max_population([{"hidden_layers": 3, "units": 50}], 16, budget_bytes=1) == 1
    with pytest.raises(ConfigError, match="share depth"):
        Population(
            [seeded_model(PLAIN, 1), seeded_model({"hidden_layers": 2, "units": 30}, 1)],
            [CONFIG, CONFIG],
            train,
        )
    with pytest.raises(ConfigError, match="one batch size"):
        Population([seeded_model(PLAIN, 1)] * 2, [CONFIG, replace(CONFIG, batch_size=16)], train)
    with pytest.raises(ConfigError, match="larger than the training set"):
        Population([seeded_model(PLAIN, 1)], [replace(CONFIG, batch_size=5000)], train)
    with pytest.raises(ConfigError, match="one config per model"):
        Population([seeded_model(PLAIN, 1)], [], train)
    with pytest.raises(ConfigError, match="not a population checkpoint"):
        Population.from_checkpoint({"format": "x"}, train)
    assert math.isfinite(population_bytes(PLAIN, 16))
