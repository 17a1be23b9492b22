"""fashionlab: a reproducible deep-learning lab on Fashion-MNIST.

The public API is re-exported here, loaded lazily (``import fashionlab`` does not import torch
until a name is used, so ``fashionlab --help`` stays fast). Every capability also has a
``fashionlab`` subcommand.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "FashionLabError": "errors", "DataError": "errors", "ConfigError": "errors", "CheckpointError": "errors",
    "StorageError": "errors", "FolderInUseError": "errors",
    # data
    "CLASSES": "data", "Split": "data", "FastLoader": "data", "load_train": "data", "load_test": "data",
    "load_train_val": "data", "torchvision_dataset": "data",
    # utilities and checkpoints
    "seed_everything": "utils", "resolve_device": "utils", "save_checkpoint": "checkpoint", "load_model": "checkpoint",
    "lock_folder": "utils",
    # the classifier
    "MLP": "models", "build_mlp": "models", "model_from_name": "models", "MODEL_NAMES": "models",
    "TrainConfig": "train", "fit": "train", "evaluate": "train",
    "TuneConfig": "tune", "TuneResult": "tune", "hyperparam_tuning": "tune",
    "ClassifierConfig": "classifier", "ClassifierResult": "classifier", "run_classifier": "classifier",
    # He initialization
    "HeInitConfig": "heinit", "verify_he_init": "heinit", "depth_experiment": "heinit", "run_heinit": "heinit",
    # loss landscape
    "Trajectory": "landscape", "TrajectoryRecorder": "landscape", "PCAPlane": "landscape", "pca_plane": "landscape",
    "LandscapeResult": "landscape", "loss_landscape": "landscape", "save_surface_npz": "landscape",
    "LandscapeConfig": "landscape", "run_landscape": "landscape",
    # autoencoder
    "Autoencoder": "autoencoder", "AutoencoderConfig": "autoencoder", "train_autoencoder": "autoencoder",
    "run_autoencoder": "autoencoder",
    # the study and its report
    "StudyConfig": "pipeline", "run_study": "pipeline", "build_report": "report",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fashionlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
