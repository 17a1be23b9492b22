"""fashionlab: a reproducible deep-learning lab on Fashion-MNIST.

The public API is re-exported here; every capability also has a ``fashionlab`` subcommand.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import load_model, save_checkpoint
from .data import FastLoader, Split, load_test, load_train, load_train_val, torchvision_dataset
from .errors import CheckpointError, ConfigError, DataError, FashionLabError
from .models import MLP, model_from_name
from .train import TrainConfig, evaluate, fit
from .utils import resolve_device, seed_everything

__all__ = [
    "__version__",
    "CheckpointError", "ConfigError", "DataError", "FashionLabError",
    "FastLoader", "Split", "load_test", "load_train", "load_train_val", "torchvision_dataset",
    "MLP", "model_from_name", "TrainConfig", "evaluate", "fit",
    "load_model", "save_checkpoint", "resolve_device", "seed_everything",
]
