"""Shared fixtures and the two test tiers.

The fast tier (``make check``, ``pytest -m "not slow"``) is unit tests on small synthetic IDX
files; the full tier (``make test``, what CI runs) adds every test marked ``slow``. A test is in
the full tier when it needs

* the real Fashion-MNIST (fixture ``real_data_dir``, directly or through another fixture) or a
  finished quick run (``quick_run``, ``quick_run_copy``), or PostgreSQL or Chromium (markers
  ``postgres``, ``browser``): marked here, at collection;
* a subprocess, a worker process or a server, or seconds of training: marked in its file.

While a fast-tier test sets up and runs, an audit hook (``tiers.py``) refuses those things (a
process, a socket, a file of the real data), so a test that lacks its mark fails instead of
hiding in the fast tier.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import synthetic_data
import tiers
from fashionlab import data
from fashionlab.threads import pin_threads
from quick_study import QUICK_OVERRIDES, QuickRun, fingerprint

# One thread: these are tiny models, and CI machines are shared (extra OpenMP threads spin-wait).
pin_threads(1)

# matplotlib loads its font list once per process, on first use, and builds it first (running
# fc-list, a process) when its cache has none: load it now, before any test is watched, so no
# fast-tier test fails for being the first of a selection to draw.
import matplotlib.font_manager  # noqa: E402, F401

# ----------------------------------------------------------------------------- the two tiers

sys.addaudithook(tiers.audit)
tiers.guard_spawn()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from tiers.watched(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from tiers.watched(item))


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects on the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if tiers.needs_full_tier(item):
            item.add_marker(pytest.mark.slow)


# ----------------------------------------------------------------------------- data


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
def real_tiny_train_val(train_val: tuple[data.Split, data.Split]) -> tuple[data.Split, data.Split]:
    """Small stratified subsets (2,000 / 500) of the real split, for the few training tests whose
    expectations hold on the real images only."""
    train, val = train_val
    return train.subset(2000, seed=1), val.subset(500, seed=1)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> synthetic_data.SyntheticData:
    """Four small synthetic IDX files (2,500 train and 500 test images) and their specs."""
    return synthetic_data.write_files(tmp_path_factory.mktemp("synthetic-idx"))


@pytest.fixture
def synthetic_data_dir(
    synthetic: synthetic_data.SyntheticData, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The synthetic files' folder, for any ``data_dir`` argument: ``data.FILES`` is replaced
    by their specs for this test, so the loader verifies them as it verifies the real ones."""
    monkeypatch.setattr(data, "FILES", synthetic.specs)
    return synthetic.folder


@pytest.fixture(scope="session")
def tiny_train_val(
    synthetic: synthetic_data.SyntheticData,
) -> tuple[data.Split, data.Split]:
    """A stratified, seeded 2,000 / 500 train/validation split of the synthetic train file."""
    full = synthetic_data.read_split(synthetic, "train")
    train_index, val_index = data.stratified_split(full.labels, synthetic_data.VAL_SIZE, seed=0)
    return full.take(train_index), full.take(val_index)


# ----------------------------------------------------------------------------- the quick run


@pytest.fixture(scope="session")
def _quick_study(
    tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path
) -> tuple[QuickRun, dict]:
    from fashionlab.pipeline import StudyConfig, run_study

    folder = tmp_path_factory.mktemp("quick") / "run"
    study = StudyConfig(
        quick=True, seed=0, device="cpu", data_dir=str(real_data_dir), overrides=QUICK_OVERRIDES
    )
    lines: list[str] = []
    outcomes = run_study(folder, study, progress=False, jobs=2, echo=lines.append)
    return QuickRun(folder, study, tuple(outcomes), tuple(lines)), fingerprint(folder)


@pytest.fixture
def quick_run(_quick_study: tuple[QuickRun, dict]) -> Iterator[QuickRun]:
    """The one quick study of the session (two workers), for tests that only read it; a test
    that writes into its folder fails here (it takes ``quick_run_copy`` instead)."""
    run, before = _quick_study
    yield run
    assert fingerprint(run.folder) == before, "this test changed the shared quick run's folder"


@pytest.fixture
def quick_run_copy(_quick_study: tuple[QuickRun, dict], tmp_path: Path) -> QuickRun:
    """A copy of the session's quick run in this test's own folder, to change as it likes."""
    run, _ = _quick_study
    folder = tmp_path / "run"
    shutil.copytree(run.folder, folder, symlinks=True)
    return replace(run, folder=folder)
