"""The appendix: the source of the key functions, taken from the code that made the report."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .markup import code, esc

__all__ = ["source_code"]


def _listings() -> list[tuple[str, Callable[..., Any] | type]]:
    from .. import models, train
    from ..experiments import autoencoder, landscape
    from ..experiments.classifier import objective, tune

    items: list[tuple[str, Any]] = [
        ("hyperparam_tuning (fashionlab/experiments/classifier/tune.py)", tune.hyperparam_tuning),
        (
            "the objective of one trial (fashionlab/experiments/classifier/objective.py)",
            objective.Objective,
        ),
        ("SGD with L2 on the weight matrices only (fashionlab/train.py)", train.SGD),
        ("the training loop (fashionlab/train.py)", train.train_epochs),
        (
            "the batched grid evaluation (fashionlab/experiments/landscape/evaluate.py)",
            landscape.loss_landscape,
        ),
        ("the autoencoder (fashionlab/models.py)", models.Autoencoder),
        (
            "its training (fashionlab/experiments/autoencoder/train.py)",
            autoencoder.train_autoencoder,
        ),
    ]
    from ..experiments.landscape.grid import _Evaluator

    items.insert(5, ("the grid evaluator (fashionlab/experiments/landscape/grid.py)", _Evaluator))
    return items


def source_code(run_dir: Path) -> str:
    out = [
        "= Appendix — source code of the key functions\n",
        "These listings are taken from the code that produced this report (with `inspect`).\n",
    ]
    for caption, obj in _listings():
        out.append(f"== {esc(caption)}\n")
        out.append(code(textwrap.dedent(inspect.getsource(obj)).rstrip()))
    return "".join(out)
