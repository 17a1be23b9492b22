"""Seconds per model-epoch of the population trainer against today's ``fit`` and a textbook loop.

Sides, each on the same MLP (3 or 5 hidden layers of 50 ReLU units, the plain space's widest),
SGD with momentum 0.9 and L2 1e-4 on the weight matrices, one torch thread:

* ``textbook``: ``DataLoader(TensorDataset(x, y), shuffle=True)`` + ``nn.Sequential`` +
  ``torch.optim.SGD`` (weight decay on the matrices only), ``loss.item()`` every step;
* ``fit``: commit 2025eea's ``fashionlab.train.fit`` (FastLoader, its own SGD class with a
  per-parameter momentum loop, autograd, ``.item()`` per step), copied below as ``_old_fit`` so
  the comparison survives changes to ``src/``;
* ``K=1``, ``K=4``, ...: :class:`fashionlab.population.Population` with K members (K seeds of the
  setting) trained together, each with its own minibatch order; its time is divided by K;
* ``S=1``, ``S=8``, ...: the same with one minibatch order shared by the population
  (``order_seed``): its first layer is one matrix product for all K members.

What is timed: ``--steps`` SGD steps per side (default 100), on a stratified subset of ``steps *
batch`` of the 50,000 training images of the seed-0 split (one epoch of it), scaled to an epoch of
the 50,000 images (``ceil(50000 / batch)`` steps): a step's cost does not depend on the size of
the set it draws from. The sides run back to back and interleaved (round-robin, the order
rotated each round, ``--repeats`` rounds, default 3), and the fastest round of each side is
kept, because the machine may be shared: read the ratios (``fit`` / side), not the seconds.

    python benchmarks/bench_population.py                                # the whole grid
    python benchmarks/bench_population.py --batches 16 32 --depths 3 --ks 1 8 --shared-ks 8
    python benchmarks/bench_population.py --device cuda                  # where a GPU is present
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from fashionlab._interrupts import check as check_interrupt
from fashionlab.batches import FastLoader
from fashionlab.data import load_train_val
from fashionlab.population import Population, seeded_model
from fashionlab.runtime import resolve_device, seed_everything
from fashionlab.threads import pin_threads
from fashionlab.train import TrainConfig, _learning_rate

TRAIN_IMAGES = 50_000


# --- commit 2025eea's fit, as it trained (its SGD class and its minibatch loop) ---------------


class _OldSGD:
    """fashionlab.train.SGD at commit 2025eea."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        matrices = [p for p in model.parameters() if p.ndim >= 2]
        others = [p for p in model.parameters() if p.ndim < 2]
        self.params = matrices + others
        self.penalised = len(matrices)
        self.lr, self.momentum, self.nesterov, self.l2 = (
            config.lr,
            config.momentum,
            config.nesterov,
            config.l2,
        )
        self.velocity: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not index:
            return
        params = [self.params[i] for i in index]
        grads = [p.grad for p in params]
        penalised = [k for k, i in enumerate(index) if i < self.penalised]
        if self.l2 and penalised:
            decayed = torch._foreach_add(
                [grads[k] for k in penalised], [params[k] for k in penalised], alpha=self.l2
            )
            for k, g in zip(penalised, decayed, strict=True):
                grads[k] = g
        if self.momentum:
            velocity = []
            for k, i in enumerate(index):
                if self.velocity[i] is None:
                    self.velocity[i] = grads[k].clone()
                else:
                    self.velocity[i].mul_(self.momentum).add_(grads[k])
                velocity.append(self.velocity[i])
            grads = (
                torch._foreach_add(grads, velocity, alpha=self.momentum)
                if self.nesterov
                else velocity
            )
        torch._foreach_add_(params, grads, alpha=-self.lr)


def _old_fit(model: nn.Module, train, config: TrainConfig, device: torch.device) -> None:
    """fashionlab.train.fit at commit 2025eea without validation (its train_epochs loop)."""
    from tqdm.auto import tqdm

    seed_everything(config.seed)
    model.to(device)
    drop_last = len(train) % config.batch_size == 1
    loader = FastLoader(
        train, config.batch_size, shuffle=True, seed=config.seed, device=device, drop_last=drop_last
    )
    optimizer = _OldSGD(model, config)
    total_steps = config.epochs * len(loader)
    train_loss: list[float] = []
    step = 0
    with tqdm(total=total_steps, disable=True, unit="step", leave=False) as bar:
        for _ in range(config.epochs):
            model.train()
            loss_sum, count = 0.0, 0
            for x, y in loader:
                check_interrupt()
                loss = F.cross_entropy(model(x), y)
                value = loss.detach().item()
                if not math.isfinite(value):
                    return
                optimizer.zero_grad()
                loss.backward()
                optimizer.lr = _learning_rate(config, step, total_steps)
                optimizer.step()
                step += 1
                loss_sum += value
                count += 1
                bar.update(1)
                train_loss.append(value)


# --- the textbook loop ------------------------------------------------------------------------


def _textbook(model_config: dict, train, config: TrainConfig, device: torch.device) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(config.seed)
    layers: list[nn.Module] = []
    fan_in = 784
    for _ in range(model_config["hidden_layers"]):
        layers += [nn.Linear(fan_in, model_config["units"]), nn.ReLU()]
        fan_in = model_config["units"]
    model = nn.Sequential(*layers, nn.Linear(fan_in, 10)).to(device)
    x, y = train.tensors()
    loader = DataLoader(TensorDataset(x, y), batch_size=config.batch_size, shuffle=True)
    weights = [p for p in model.parameters() if p.ndim == 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.SGD(
        [{"params": weights, "weight_decay": config.l2}, {"params": others}],
        lr=config.lr,
        momentum=config.momentum,
    )
    model.train()
    for _ in range(config.epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            loss.item()


def _population(
    model_config: dict, train, config: TrainConfig, k: int, device, shared: bool = False
) -> None:
    configs = [replace(config, seed=config.seed + i) for i in range(k)]
    models = [seeded_model(model_config, c.seed) for c in configs]
    order_seed = config.seed if shared else None
    Population(models, configs, train, device=device, order_seed=order_seed).train()


def _timed(side: str, model_config: dict, train, config: TrainConfig, device) -> float:
    """Wall seconds of one run of ``side`` (textbook, fit, K=<k> or S=<k>)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    if side == "textbook":
        _textbook(model_config, train, config, device)
    elif side == "fit":
        _old_fit(seeded_model(model_config, 0), train, config, device)
    else:
        _population(model_config, train, config, int(side[2:]), device, side.startswith("S="))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--depths", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument(
        "--shared-ks",
        type=int,
        nargs="*",
        default=[1, 8, 16],
        help="population sizes with a shared minibatch order (default: 1 8 16; none: leave out)",
    )
    parser.add_argument("--steps", type=int, default=100, help="SGD steps per side (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per cell (default 3)")
    parser.add_argument("--no-textbook", action="store_true", help="leave the textbook loop out")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    args = parser.parse_args()
    pin_threads(args.threads)
    device = resolve_device(args.device)
    full, _ = load_train_val(val_size=10_000, seed=0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# bench_population: {args.steps} steps per side scaled to an epoch of {TRAIN_IMAGES} "
        f"images, best of {args.repeats} interleaved rounds, {args.threads} thread(s), "
        f"{device}, torch {torch.__version__}, load average {load:.2f} at start"
    )
    sides = ([] if args.no_textbook else ["textbook"]) + ["fit"] + [f"K={k}" for k in args.ks]
    sides += [f"S={k}" for k in args.shared_ks]
    print(
        f"{'depth':>5} {'batch':>5} "
        + " ".join(f"{s:>9}" for s in sides)
        + "   (s per model-epoch)   fit / side: "
        + " ".join(f"{s:>8}" for s in sides if s != "fit")
    )
    warm = full.subset(512, seed=0)  # first calls: imports (torch.optim), allocator, kernels
    for depth in args.depths:
        model_config = {"hidden_layers": depth, "units": 50}
        warm_config = TrainConfig(epochs=1, batch_size=64, momentum=0.9, l2=1e-4)
        _textbook(model_config, warm, warm_config, device)
        _old_fit(seeded_model(model_config, 0), warm, warm_config, device)
        _population(model_config, warm, warm_config, 2, device)
        _population(model_config, warm, warm_config, 2, device, shared=True)
        for batch in args.batches:
            train = full.subset(min(len(full), args.steps * batch), seed=0)
            steps = math.ceil(len(train) / batch)
            scale = math.ceil(TRAIN_IMAGES / batch) / steps
            config = TrainConfig(
                epochs=1, batch_size=batch, lr=0.05, momentum=0.9, l2=1e-4, schedule="wsd"
            )
            best = {side: math.inf for side in sides}
            for round_ in range(args.repeats):
                order = sides[round_ % len(sides) :] + sides[: round_ % len(sides)]
                for side in order:
                    seconds = _timed(side, model_config, train, config, device)
                    best[side] = min(best[side], seconds)
            per = {
                side: best[side] * scale / (int(side[2:]) if side[:2] in ("K=", "S=") else 1)
                for side in sides
            }
            print(
                f"{depth:>5} {batch:>5} "
                + " ".join(f"{per[s]:>9.3f}" for s in sides)
                + "                         "
                + " ".join(f"{per['fit'] / per[s]:>8.2f}" for s in sides if s != "fit"),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
