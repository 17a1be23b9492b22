"""One checkpoint format for every model of the project, and one function to load it.

A checkpoint is a ``torch.save`` dict whose keys ``docs/run-directory.md`` lists
(``classifier/model.pt``): the format, the model ``kind``, the ``config`` that rebuilds the
module, its ``state_dict``, metrics and versions.

``kind`` names a builder in ``_BUILDERS``: the project's two models (``fashionlab.models``, below
this module) are built in; other code adds its own kinds with :func:`register_model_kind`. A
builder takes the ``config`` dict and returns an ``nn.Module`` with freshly initialised weights,
which ``load_model`` then overwrites.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path
from .errors import CheckpointError
from .models import build_autoencoder, build_mlp

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "register_model_kind"]

FORMAT = "fashionlab-checkpoint/1"

Builder = Callable[[dict[str, Any]], nn.Module]

_BUILDERS: dict[str, Builder] = {"mlp": build_mlp, "autoencoder": build_autoencoder}


def register_model_kind(kind: str, builder: Builder) -> None:
    """Register ``builder`` (config dict -> fresh module) for checkpoints of ``kind``."""
    _BUILDERS[kind] = builder


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    kind: str,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` with the config that rebuilds it; atomic (temp file, then rename).

    Args:
        path: destination ``.pt`` file.
        model: the module whose ``state_dict`` is saved (moved to CPU tensors).
        kind: a registered model kind (``"mlp"``, ``"autoencoder"``).
        config: keyword arguments of the kind's builder.
        metrics: anything worth keeping next to the weights (test accuracy, history).
    """
    if kind not in _BUILDERS:
        raise CheckpointError(f"unknown model kind {kind!r}; known: {sorted(_BUILDERS)}")
    payload = {
        "format": FORMAT,
        "kind": kind,
        "config": _plain(dict(config)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": _plain(dict(metrics or {})),
        # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses.
        "versions": {"torch": str(torch.__version__)},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _plain(obj: Any) -> Any:
    """NumPy scalars/arrays and paths as plain Python: ``torch.load(weights_only=True)`` refuses
    them."""
    if isinstance(obj, dict):
        return {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(value) for value in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, str):
        return str(obj)  # str subclasses (TorchVersion, StrEnum) are refused too
    return obj


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, also accepting files that stored ``torch.__version__`` as
    is."""
    from torch.torch_version import TorchVersion

    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    if safe_globals is None:
        return torch.load(path, map_location="cpu", weights_only=True)
    with safe_globals([TorchVersion]):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint dict and check its format; raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = _torch_load(path)
    except Exception as exc:  # torch raises many types for a corrupt file
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
        # torch's messages span many lines; for a refused object the useful one is the unpickler's.
        first = next(
            (line for line in lines if line.startswith("WeightsUnpickler error")), lines[0]
        )
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {first}); "
            f"it is corrupt or not a torch file: write it again"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fashionlab checkpoint (expected format {FORMAT})")
    return payload


def load_model(
    path: str | os.PathLike[str],
    *,
    expect_kind: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Load any fashionlab checkpoint back into a module, in eval mode.

    Args:
        path: a file written by :func:`save_checkpoint`.
        expect_kind: if given, refuse a checkpoint of another kind.
        device: where to put the module.

    Returns:
        The rebuilt module with the saved weights; ``module.checkpoint`` holds config and metrics.

    Raises:
        CheckpointError: unreadable file, other kind than expected, or weights that do not
            fit the architecture the config describes.
    """
    payload = load_checkpoint(path)
    kind = payload["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(
            f"{path} holds a model of kind {kind!r} ({payload['config']}), expected kind "
            f"{expect_kind!r}"
        )
    if kind not in _BUILDERS:
        raise CheckpointError(f"{path}: unknown model kind {kind!r}; known: {sorted(_BUILDERS)}")
    model = _BUILDERS[kind](payload["config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not fit a {kind} built from {payload['config']}: {first}"
        ) from exc
    model.checkpoint = {"kind": kind, "config": payload["config"], "metrics": payload["metrics"]}
    return model.to(device).eval()
