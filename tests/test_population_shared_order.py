"""The population trainer with one minibatch order for the whole population (``order_seed``): a
member inside against the member alone with the same order seed (bit for bit), the order's own
seed, gradients against autograd, divergence, forks and checkpoints."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fashionlab.errors import ConfigError
from fashionlab.population import Population, seeded_model
from population_cases import CONFIG, PLAIN, equal_states, max_difference, members

ORDER = 11


def _population(pairs, train, **kwargs) -> Population:
    models = [seeded_model(m, c.seed) for m, c in pairs]
    return Population(models, [c for _, c in pairs], train, order_seed=ORDER, **kwargs)


def test_a_member_of_a_shared_order_population_is_bit_for_bit_itself_alone(
    tiny_train_val,
) -> None:
    train, val = tiny_train_val
    pairs = list(zip(*members(), strict=True))
    population = _population(pairs, train)
    results = population.train(val=val)
    widths = population.sizes[1:-1]
    for k, pair in enumerate(pairs):
        assert results[k].steps == pair[1].epochs * 63 and not results[k].diverged
        alone = _population([pair], train, widths=widths)  # the same order seed, padded alike
        alone_results = alone.train(val=val)
        assert equal_states(population.state_dict(k), alone.state_dict(0))
        assert results[k].history == alone_results[0].history
        # unpadded: within tolerance (the products sum over other, zero, terms)
        plain = _population([pair], train)
        plain_results = plain.train(val=val)
        assert max_difference(population.state_dict(k), plain.state_dict(0)) < 1e-4
        final = results[k].history.val_acc[-1]
        assert abs(final - plain_results[0].history.val_acc[-1]) * len(val) <= 1


def test_the_shared_order_is_the_order_of_its_seed(tiny_train_val) -> None:
    """One member with order_seed s is the member with its own order from seed s (the order of
    FastLoader(seed=s)); only the first layer's product differs in form (one GEMM against a
    batched one), so within float tolerance. Another order seed gives another run."""
    train, val = tiny_train_val
    config = replace(CONFIG, seed=ORDER)
    shared = Population([seeded_model(PLAIN, ORDER)], [config], train, order_seed=ORDER)
    shared_result = shared.train(val=val)[0]
    own = Population([seeded_model(PLAIN, ORDER)], [config], train)
    own_result = own.train(val=val)[0]
    assert max_difference(shared.state_dict(0), own.state_dict(0)) < 1e-5
    assert abs(shared_result.history.val_acc[-1] - own_result.history.val_acc[-1]) * len(val) <= 1
    other = Population([seeded_model(PLAIN, ORDER)], [config], train, order_seed=ORDER + 1)
    other.train()
    assert max_difference(shared.state_dict(0), other.state_dict(0)) > 1e-3


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu", "gelu"])
def test_shared_order_gradients_are_autograd_s(tiny_train_val, activation: str) -> None:
    train, _ = tiny_train_val
    model_configs = [{"hidden_layers": 3, "units": w, "activation": activation} for w in (20, 30)]
    configs = [replace(CONFIG, seed=s) for s in (1, 2)]
    models = [seeded_model(m, c.seed) for m, c in zip(model_configs, configs, strict=True)]
    population = Population(models, configs, train, order_seed=ORDER)
    x = train.images[:32].reshape(32, 784).float() / 255
    y = train.labels[:32]
    losses, grads = population.gradients(x, y)
    auto_losses, auto_grads = population.gradients(x, y, autograd=True)
    assert torch.allclose(losses, auto_losses, rtol=0, atol=1e-6)
    assert float((grads - auto_grads).abs().max()) < 3e-8
    # the per-member program on the same minibatch for every member
    apart = Population(models, configs, train)
    apart_losses, apart_grads = apart.gradients(x.expand(2, -1, -1), y.expand(2, -1))
    assert torch.allclose(losses, apart_losses, rtol=0, atol=1e-6)
    assert float((grads - apart_grads).abs().max()) < 3e-8
    # and autograd's on the plain modules themselves
    views = population._views(grads, population.slots)
    for k, model in enumerate(models):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for layer, linear in enumerate(linears):
            for kind in ("weight", "bias"):
                own = getattr(linear, kind).grad
                padded = views[(layer, kind)][k][tuple(slice(0, d) for d in own.shape)]
                assert float((padded - own).abs().max()) < 3e-8


def test_shared_order_batchnorm_and_prelu_members_stack_bit_for_bit(tiny_train_val) -> None:
    train, val = tiny_train_val
    for model_config in (
        {"hidden_layers": 2, "units": 20, "batchnorm": True, "dropout": 0.1},
        {"hidden_layers": 2, "units": 20, "activation": "prelu"},
    ):
        pairs = [(model_config, replace(CONFIG, seed=s)) for s in (3, 7)]
        population = _population(pairs, train)
        population.train(val=val)
        for k, pair in enumerate(pairs):
            alone = _population([pair], train)
            alone.train(val=val)
            assert equal_states(population.state_dict(k), alone.state_dict(0))


@pytest.mark.parametrize("model_config", [PLAIN, PLAIN | {"batchnorm": True}])
@pytest.mark.parametrize("order_seed", [None, ORDER])
def test_a_diverging_member_leaves_and_the_others_go_on(
    real_tiny_train_val, caplog, model_config: dict, order_seed: int | None
) -> None:
    """Per-member and shared order, hand-written and autograd (BatchNorm) backward.

    On the real data: on the synthetic files the BatchNorm member's last finite loss comes from
    weights that its update already made infinite, so the finite-weights check below fails."""
    train, _ = real_tiny_train_val
    configs = [replace(CONFIG, seed=1), replace(CONFIG, seed=2, lr=1e6), replace(CONFIG, seed=3)]
    models = [seeded_model(model_config, c.seed) for c in configs]
    population = Population(models, configs, train, order_seed=order_seed)
    results = population.train()
    assert [r.diverged for r in results] == [False, True, False]
    assert results[1].steps < 63
    # its weights from before the step whose loss was not finite (BatchNorm's running statistics
    # took that step's forward already)
    weights = {k: v for k, v in population.state_dict(1).items() if "running" not in k}
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert "diverged" in caplog.text
    for k in (0, 2):
        alone = Population(
            [seeded_model(model_config, configs[k].seed)],
            [configs[k]],
            train,
            order_seed=order_seed,
        )
        alone_result = alone.train()[0]
        assert equal_states(population.state_dict(k), alone.state_dict(0))
        assert results[k].history == alone_result.history


def test_a_shared_order_checkpoint_resumes_bit_for_bit_and_a_fork_goes_on_in_order(
    tiny_train_val, tmp_path
) -> None:
    train, val = tiny_train_val
    pairs = list(zip(*members(), strict=True))
    whole = _population(pairs, train)
    whole.train(val=val)
    first = _population(pairs, train)
    first.train(epochs=1, val=val)
    first.save(tmp_path / "p.pt")
    resumed = Population.from_checkpoint(torch.load(tmp_path / "p.pt", weights_only=False), train)
    assert resumed.order_seed == ORDER
    resumed.train(val=val)
    for k in range(len(pairs)):
        assert equal_states(whole.state_dict(k), resumed.state_dict(k))
        assert whole.results[k].history == resumed.results[k].history
    # a constant-lr trunk forked at epoch 2 into the WSD run of 3 epochs is that run; the trunk
    # goes on in its own order as if no fork had been made
    wsd = replace(CONFIG, epochs=3)
    constant = replace(wsd, schedule="constant", epochs=3)
    trunk = _population([(PLAIN, constant)], train)
    trunk.train(epochs=2)
    branch = trunk.fork({0: wsd})
    branch.train()
    direct = _population([(PLAIN, wsd)], train)
    direct.train()
    assert equal_states(branch.state_dict(0), direct.state_dict(0))
    trunk.train()
    straight = _population([(PLAIN, constant)], train)
    straight.train()
    assert equal_states(trunk.state_dict(0), straight.state_dict(0))


def test_a_bad_order_seed_is_refused(tiny_train_val) -> None:
    train, _ = tiny_train_val
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ConfigError, match="order_seed"):
            Population([seeded_model(PLAIN, 1)], [CONFIG], train, order_seed=bad)
    population = Population([seeded_model(PLAIN, 1)], [CONFIG], train, order_seed=0)
    x = train.images[:32].reshape(1, 32, 784).float() / 255
    with pytest.raises(ConfigError, match="one minibatch"):
        population.gradients(x, train.labels[:32].reshape(1, 32))
