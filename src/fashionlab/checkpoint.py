"""One checkpoint format for every model of the project, and one function to load it.

A checkpoint is a ``torch.save`` dict::

    {"format": "fashionlab-checkpoint/1", "kind": "mlp" | "autoencoder" | ...,
     "config": {...},          # the keyword arguments that rebuild the module
     "state_dict": {...}, "metrics": {...}, "versions": {...}}

``kind`` names a builder in ``_BUILDERS`` ("module:function"), imported lazily so this
module stays free of import cycles. A builder takes the ``config`` dict and returns an
``nn.Module`` with freshly initialised weights, which ``load_model`` then overwrites.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .utils import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "load_model", "register_model_kind"]

FORMAT = "fashionlab-checkpoint/1"

_BUILDERS: dict[str, str] = {
    "mlp": "fashionlab.models:build_mlp",
    "autoencoder": "fashionlab.autoencoder:build_autoencoder",
}


def register_model_kind(kind: str, builder: str) -> None:
    """Register ``builder`` ("package.module:function") for checkpoints of ``kind``."""
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
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
        "versions": {"torch": torch.__version__},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint dict and check its format; raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from exc
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
            f"{path} holds a {kind!r} model ({payload['config']}), expected a {expect_kind!r} model"
        )
    if kind not in _BUILDERS:
        raise CheckpointError(f"{path}: unknown model kind {kind!r}; known: {sorted(_BUILDERS)}")
    module_name, func_name = _BUILDERS[kind].split(":")
    builder = getattr(importlib.import_module(module_name), func_name)
    model = builder(payload["config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit a {kind} built from {payload['config']}: {first}") from exc
    model.checkpoint = {"kind": kind, "config": payload["config"], "metrics": payload["metrics"]}
    return model.to(device).eval()
