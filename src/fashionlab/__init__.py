"""fashionlab: a reproducible deep-learning lab on Fashion-MNIST.

The public API is re-exported here, loaded lazily (``import fashionlab`` does not import torch
until a name is used, so ``fashionlab --help`` stays fast). Every capability also has a
``fashionlab`` subcommand.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# submodule -> the public names it defines
_MODULES: dict[str, tuple[str, ...]] = {
    "errors": (
        "FashionLabError",
        "DataError",
        "ConfigError",
        "CheckpointError",
        "StorageError",
        "FolderInUseError",
    ),
    "data": (
        "CLASSES",
        "Split",
        "FastLoader",
        "load_train",
        "load_test",
        "load_train_val",
        "torchvision_dataset",
    ),
    "runtime": ("seed_everything", "resolve_device"),
    "locks": ("lock_folder",),
    "checkpoint": ("save_checkpoint", "load_model"),
    "models": ("MLP", "Autoencoder", "build_mlp", "model_from_name", "MODEL_NAMES"),
    "train": ("TrainConfig", "evaluate"),
    "population": ("Population", "fit", "fit_population", "seeded_model"),
    "experiments.classifier": (
        "TuneConfig",
        "TuneResult",
        "hyperparam_tuning",
        "ClassifierConfig",
        "ClassifierResult",
        "run_classifier",
    ),
    "experiments.heinit": ("HeInitConfig", "verify_he_init", "depth_experiment", "run_heinit"),
    "experiments.landscape": (
        "Trajectory",
        "TrajectoryRecorder",
        "PCAPlane",
        "pca_plane",
        "LandscapeResult",
        "loss_landscape",
        "save_surface_npz",
        "LandscapeConfig",
        "run_landscape",
    ),
    "experiments.autoencoder": ("AutoencoderConfig", "train_autoencoder", "run_autoencoder"),
    "pipeline": ("StudyConfig", "run_study"),
    "report": ("build_report",),
}
_names, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
__all__ = ["__version__", *_names]
