"""Shared fixtures: the real Fashion-MNIST (Debian package in CI), an isolated cache, tiny
splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fashionlab import data
from fashionlab.threads import pin_threads

# One thread: these are tiny models, and CI machines are shared (extra OpenMP threads spin-wait).
pin_threads(1)


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own empty user cache and no FASHIONLAB_DATA."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("FASHIONLAB_DATA", raising=False)
    return cache / "fashionlab"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The Debian package's folder; missing data is a failure in CI and a skip elsewhere."""
    folder = data.DEBIAN_DIR
    if not all((folder / f"{spec.name}.gz").is_file() for spec in data.FILES.values()):
        message = (
            f"real Fashion-MNIST not installed in {folder} (apt-get install dataset-fashion-mnist)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def train_val(real_data_dir: Path) -> tuple[data.Split, data.Split]:
    """The real 50,000/10,000 train/validation split (seed 0)."""
    return data.load_train_val(val_size=10_000, seed=0, data_dir=real_data_dir)


@pytest.fixture(scope="session")
def tiny_train_val(train_val: tuple[data.Split, data.Split]) -> tuple[data.Split, data.Split]:
    """Small stratified subsets (2,000 / 500) of the real data, for fast training tests."""
    train, val = train_val
    return train.subset(2000, seed=1), val.subset(500, seed=1)
