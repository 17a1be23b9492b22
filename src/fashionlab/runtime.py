"""Where and how a computation runs: seeds, the device, eval mode, and a stopwatch."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator

import numpy as np
import torch

from .errors import ConfigError
from .validation import check_seed

__all__ = ["seed_everything", "resolve_device", "eval_mode", "Stopwatch"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer.

    This is the one place seeds are set. Returns a fresh CPU ``torch.Generator`` seeded
    with ``seed`` for callers that want an explicit stream (data shuffling).
    """
    check_seed("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a usable ``torch.device``.

    Raises:
        ConfigError: the device string is malformed or CUDA is asked for but absent.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto"
            )
        try:
            device = torch.device(spec)
        except RuntimeError as exc:
            raise ConfigError(
                f"--device {spec}: not a valid device; expected cuda or cuda:N (N >= 0)"
            ) from exc
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
        return device
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode (no dropout, BatchNorm running statistics) for the body.

    The model's previous training flags are restored afterwards, module by module.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


class Stopwatch:
    """Wall-clock timer: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
