"""The reference row: the space's hand recipe (``space.REFERENCE``) trained outside the study with
the study's own protocol, so the report can set the search's pick beside a person's choice.

Same split, same rungs, same WSD schedule with the same decay, the seed of the study's first
trial (``TuneConfig.seed``); its length is the rung it scores best on, on validation, exactly as
the study picks its own. Nothing of it enters the study. File format: ``docs/run-directory.md``
(``reference.json``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ....atomic import atomic_write_json, read_json
from ....models import MLP
from ....runtime import seed_everything
from ..config import TuneConfig
from ..space import REFERENCE, settings_from_params
from .export import full_params
from .rungs import train_rungs

__all__ = ["train_reference"]

logger = logging.getLogger(__name__)


def _protocol(config: TuneConfig, n_train: int, n_val: int) -> dict[str, Any]:
    return {
        "space": config.space,
        "epochs": list(config.epochs),
        "decay": config.decay,
        "seed": config.seed,
        "val_size": config.val_size,
        "train_examples": n_train,
        "val_examples": n_val,
    }


def train_reference(
    out_dir: str | os.PathLike[str], config: TuneConfig, train, val
) -> dict[str, Any]:
    """Score the reference recipe at every rung (reusing reference.json when its protocol is the
    same); write and return reference.json's dict."""
    path = Path(out_dir) / "reference.json"
    protocol = _protocol(config, len(train), len(val))
    if path.is_file():
        saved = read_json(path)
        if saved.get("protocol") == protocol:
            return saved
    params = full_params(REFERENCE[config.space], config)
    rungs = list(config.epochs)
    model_config, train_config = settings_from_params(params, seed=config.seed, epochs=rungs[-1])
    start = time.perf_counter()
    seed_everything(train_config.seed)
    model = MLP(**model_config)
    result = train_rungs(model, train, train_config, rungs, val=val, device=config.device)
    reached = sorted(result.values)
    accs = [result.values[r][0] for r in reached]
    best = max(range(len(accs)), key=accs.__getitem__)
    epochs = reached[best]
    reference = {
        "schema_version": 1,
        "protocol": protocol,
        "params": params | {"epochs": epochs},
        "model": model_config,
        "seed": train_config.seed,
        "epochs": epochs,
        "val_acc": accs[best],
        "val_loss": result.values[epochs][1],
        "rungs": reached,
        "rung_val_acc": accs,
        "diverged": result.diverged,
        "epochs_trained": result.epochs_trained,
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        "reference row (%s): val_acc %.4f at %d epochs (rungs %s)",
        config.space,
        reference["val_acc"],
        epochs,
        dict(zip(reached, accs, strict=True)),
    )
    atomic_write_json(path, reference)
    return reference
