"""fit / evaluate: one SGD step against a hand computation, L2 on matrices only, hooks,
divergence."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from fashionlab.data import FastLoader, Split
from fashionlab.errors import ConfigError
from fashionlab.models import MLP
from fashionlab.population import fit
from fashionlab.train import TrainConfig, evaluate, make_optimizer, penalised_parameters


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"lr": 0.0}, "learning rate"),
        ({"lr": -0.1}, "learning rate"),
        ({"lr": float("nan")}, "learning rate"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch size"),
        ({"batch_size": 2.5}, "batch size"),
        ({"momentum": 1.0}, "momentum"),
        ({"nesterov": True}, "nesterov"),
        ({"l2": -1e-4}, "l2"),
        ({"schedule": "step"}, "schedule"),
        ({"seed": -1}, "seed"),
    ],
)
def test_impossible_train_settings_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(**kwargs)


def test_batch_larger_than_training_set_is_refused_before_training(tiny_train_val) -> None:
    train, _ = tiny_train_val
    small = train.subset(100)
    calls = []
    with pytest.raises(ConfigError, match="larger than the training set"):
        fit(MLP(3, 30), small, TrainConfig(batch_size=128), on_step=lambda *a: calls.append(a))
    assert calls == []


def test_l2_goes_to_weight_matrices_only() -> None:
    model = MLP(3, 20, activation="prelu", batchnorm=True)
    matrices, others = penalised_parameters(model)
    assert all(p.ndim == 2 for p in matrices) and len(matrices) == 4  # three hidden Linear + head
    assert len(others) == 4 + 6 + 3  # biases, BatchNorm scales and shifts, PReLU slopes
    optimizer = make_optimizer(model, TrainConfig(l2=1e-3))
    assert (
        optimizer.params[: optimizer.penalised] == matrices
        and optimizer.params[optimizer.penalised :] == others
    )


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.8, True)])
def test_sgd_matches_torch_optim_sgd(momentum: float, nesterov: bool) -> None:
    """Reference: torch.optim.SGD with weight decay on the matrix group only, same gradients."""
    torch.manual_seed(0)
    model = MLP(2, 12, activation="prelu", batchnorm=True)
    reference = copy.deepcopy(model)
    config = TrainConfig(lr=0.05, momentum=momentum, nesterov=nesterov, l2=0.01)
    ours = make_optimizer(model, config)
    matrices, others = penalised_parameters(reference)
    theirs = torch.optim.SGD(
        [{"params": matrices, "weight_decay": 0.01}, {"params": others, "weight_decay": 0.0}],
        lr=0.05,
        momentum=momentum,
        nesterov=nesterov,
    )
    for step in range(4):
        x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
        for net, opt in ((model, ours), (reference, theirs)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(
                a, b, rtol=1e-6, atol=1e-7, msg=f"{name} after step {step + 1}"
            )


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_first_two_steps_match_a_hand_computed_update(tiny_train_val, momentum: float) -> None:
    """theta' = theta - lr (grad f_CE + l2 W) on matrices, theta - lr grad f_CE elsewhere (BN,
    PReLU)."""
    train, _ = tiny_train_val
    train = train.subset(256)
    config = TrainConfig(epochs=1, batch_size=128, lr=0.1, momentum=momentum, l2=0.01, seed=3)
    torch.manual_seed(0)
    model = MLP(2, 16, activation="prelu", batchnorm=True)
    reference = copy.deepcopy(model)
    snapshots, losses = [], []
    fit(
        model,
        train,
        config,
        on_step=lambda step, frac, m, loss: (
            snapshots.append(copy.deepcopy(m.state_dict())),
            losses.append(loss),
        ),
    )
    # Independent reference: the same batches (FastLoader with the same seed), autograd, manual
    # update.
    velocity = {name: torch.zeros_like(p) for name, p in reference.named_parameters()}
    for step, (x, y) in enumerate(FastLoader(train, 128, seed=3), start=1):
        reference.train()
        loss = F.cross_entropy(reference(x), y)
        assert losses[step] == pytest.approx(
            loss.item(), rel=1e-6
        )  # reported loss is unregularised f_CE
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        with torch.no_grad():
            for (name, p), g in zip(reference.named_parameters(), grads, strict=True):
                d = g + 0.01 * p if p.ndim >= 2 else g
                velocity[name] = momentum * velocity[name] + d if step > 1 else d
                p -= 0.1 * velocity[name]
        for name, p in reference.named_parameters():
            torch.testing.assert_close(snapshots[step][name], p, rtol=1e-5, atol=1e-6)
    assert len(snapshots) == 3 and math.isnan(losses[0])


def test_hooks_history_and_determinism(tiny_train_val) -> None:
    train, val = tiny_train_val
    config = TrainConfig(epochs=2, batch_size=100, lr=0.05, momentum=0.9, schedule="cosine", seed=5)
    steps, epochs = [], []
    torch.manual_seed(0)
    result = fit(
        MLP(3, 30),
        train,
        config,
        val=val,
        on_step=lambda s, f, m, loss: steps.append((s, f)),
        on_epoch=lambda e, acc, loss: epochs.append((e, acc, loss)),
    )
    per_epoch = len(train) // 100
    assert [s for s, _ in steps] == list(range(0, 2 * per_epoch + 1))
    assert steps[-1][1] == pytest.approx(2.0)
    assert len(result.history.train_loss) == result.steps == 2 * per_epoch
    assert [e for e, _, _ in epochs] == [1, 2]
    assert [acc for _, acc, _ in epochs] == result.history.val_acc
    assert result.history.val_acc[-1] > 0.6  # chance is 0.1
    torch.manual_seed(0)
    again = fit(MLP(3, 30), train, config, val=val)
    assert again.history.train_loss == result.history.train_loss
    torch.manual_seed(0)
    other = fit(MLP(3, 30), train, TrainConfig(**{**config.to_dict(), "seed": 6}), val=val)
    assert other.history.train_loss != result.history.train_loss


def test_on_epoch_can_stop_training(tiny_train_val) -> None:
    train, val = tiny_train_val

    class Stop(Exception):
        pass

    def stop(epoch, acc, loss):
        raise Stop

    with pytest.raises(Stop):
        fit(MLP(3, 30), train, TrainConfig(epochs=3, batch_size=200), val=val, on_epoch=stop)


def test_divergence_ends_the_run_cleanly(tiny_train_val) -> None:
    train, val = tiny_train_val
    result = fit(
        MLP(3, 30), train, TrainConfig(epochs=3, batch_size=50, lr=1e4, momentum=0.9), val=val
    )
    assert result.diverged
    assert all(math.isfinite(v) for v in result.history.train_loss)
    assert result.steps < 3 * len(train) // 50


def test_a_last_batch_of_one_does_not_break_batchnorm(tiny_train_val) -> None:
    train, _ = tiny_train_val
    result = fit(MLP(2, 8, batchnorm=True), train.subset(129), TrainConfig(epochs=1, batch_size=64))
    assert result.steps == 2 and not result.diverged


def test_evaluate_matches_a_direct_computation(tiny_train_val) -> None:
    _, val = tiny_train_val
    torch.manual_seed(0)
    model = MLP(3, 30, batchnorm=True, dropout=0.3).train()
    loss, accuracy = evaluate(model, val, batch_size=128)
    assert model.training  # evaluate restores the mode
    model.eval()
    x, y = val.tensors()
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert accuracy == pytest.approx(int((logits.argmax(1) == y).sum()) / len(y), abs=1e-12)


def test_split_of_any_size_works_with_any_batch() -> None:
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    split = Split(images, torch.arange(10) % 10)
    result = fit(MLP(1, 4), split, TrainConfig(epochs=1, batch_size=10))
    assert result.steps == 1


def test_sgd_skips_parameters_without_gradient() -> None:
    model = MLP(2, 8)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, TrainConfig(lr=0.1, momentum=0.9, l2=0.1))
    optimizer.step()  # no backward yet: nothing moves, nothing fails
    model.head.bias.grad = torch.ones_like(model.head.bias)
    optimizer.step()
    after = list(model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(after[:-1], before[:-1], strict=True))
    torch.testing.assert_close(model.head.bias, before[-1] - 0.1)
