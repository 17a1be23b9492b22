"""Seconds per epoch: the textbook DataLoader loop vs the fashionlab fast path.

One fixed MLP (784-50-50-50-10, ReLU, He init), batch 64, SGD lr 0.01 momentum 0.9, the
60,000 training images, same seed for both:

* textbook: ``torchvision.datasets.FashionMNIST`` + ``ToTensor()`` + ``DataLoader(shuffle=True,
  num_workers=0)`` — one PIL image and one tensor per example, collated per batch;
* fast: :func:`fashionlab.population.fit`, whose :class:`fashionlab.data.FastLoader` keeps the uint8
  images in memory and makes float batches by shuffled index (no per-sample Python, no PIL).

Both loops compute the same function of the same numbers (``ToTensor()`` is ``x / 255``), so the
mean training loss of the last epoch is printed as a sanity check (close, not identical: the
shuffling orders differ). A script, not a test: wall time depends on the machine and its load;
the CPU column (process CPU seconds) is steadier than wall time when other jobs share the cores.

    python benchmarks/bench_data_loader.py --epochs 1 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fashionlab.data import load_train, torchvision_dataset
from fashionlab.models import model_from_name
from fashionlab.population import fit
from fashionlab.runtime import seed_everything
from fashionlab.threads import pin_threads
from fashionlab.train import TrainConfig

MODEL = "mlp_3x50"  # 784-50-50-50-10
BATCH_SIZE, LR, MOMENTUM = 64, 0.01, 0.9


@dataclass(frozen=True)
class Timing:
    """Per-epoch wall and process-CPU seconds, and the mean training loss of the last epoch."""

    wall: float
    cpu: float
    loss: float


class Clock:
    """Wall clock and process CPU clock started together.

    CPU seconds (all threads of this process) are less sensitive than wall seconds to other
    processes competing for the cores; on a quiet machine with 1 thread the two agree.
    """

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, epochs: int, loss: float) -> Timing:
        return Timing(
            (time.perf_counter() - self.wall) / epochs,
            (time.process_time() - self.cpu) / epochs,
            loss,
        )


def textbook(epochs: int, seed: int) -> Timing:
    """pytorch/examples-style loop: seconds per epoch and mean loss of the last epoch."""
    from torch.utils.data import DataLoader

    dataset = torchvision_dataset(train=True)  # ToTensor() by default
    generator = seed_everything(seed)
    model = model_from_name(MODEL)
    loader = DataLoader(
        dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=0, generator=generator
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    model.train()
    clock = Clock()
    for _ in range(epochs):
        total, batches = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
    return clock.stop(epochs, total / batches)


def fast(epochs: int, seed: int) -> Timing:
    """The same training through ``fashionlab.population.fit`` (FastLoader)."""
    train = load_train()
    seed_everything(seed)
    model = model_from_name(MODEL)
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, momentum=MOMENTUM, seed=seed)
    clock = Clock()
    result = fit(model, train, config, device="cpu")
    return clock.stop(epochs, result.history.epoch_train_loss[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per method (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: batch-64 matmuls of a 50-unit MLP gain nothing "
        "from more, and on a busy machine OpenMP threads spin and wait for each other)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pin_threads(args.threads)
    # Load (and verify) the data once before timing, so neither method pays for it; the first
    # torch.optim optimizer imports torch._dynamo (seconds), so build one before timing too.
    load_train()
    torchvision_dataset(train=True)
    torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=LR)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s), "
        f"{platform.processor() or platform.machine()}; {MODEL} (784-50-50-50-10), batch "
        f"{BATCH_SIZE}, SGD lr {LR} momentum {MOMENTUM}, {args.epochs} epoch(s) of 60,000, seed "
        f"{args.seed}"
    )
    slow = textbook(args.epochs, args.seed)
    quick = fast(args.epochs, args.seed)
    print(f"{'method':<48} {'wall s/epoch':>12} {'CPU s/epoch':>12} {'last-epoch loss':>16}")
    for name, t in (
        ("textbook (torchvision + ToTensor + DataLoader)", slow),
        ("fast (FastLoader + fashionlab.population.fit)", quick),
    ):
        print(f"{name:<48} {t.wall:12.2f} {t.cpu:12.2f} {t.loss:16.4f}")
    print(f"speed-up: {slow.wall / quick.wall:.1f}x wall, {slow.cpu / quick.cpu:.1f}x CPU")


if __name__ == "__main__":
    main()
