"""docs/run-directory.md lists exactly the keys that the stages write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionlab.experiments.autoencoder import AutoencoderConfig, run_autoencoder
from fashionlab.experiments.classifier import (
    ClassifierConfig,
    TuneConfig,
    hyperparam_tuning,
    run_classifier,
)
from fashionlab.experiments.landscape import LandscapeConfig, run_landscape
from fashionlab.pipeline import StudyConfig, run_study

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "run-directory.md"


def documented() -> dict[str, set[str]]:
    """``stage/file`` -> the keys its table lists (first column, each in backticks)."""
    tables: dict[str, set[str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## `([^`]+)`", line)
        if heading:
            current = heading.group(1)
            tables[current] = set()
        elif current and line.startswith("| `"):
            first_cell = line.split("|")[1]
            tables[current].update(re.findall(r"`([^`]+)`", first_cell))
    return tables


def written_keys(path: Path) -> set[str]:
    if path.suffix == ".json":
        return set(json.loads(path.read_text()))
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            return set(arrays.files)
    if path.suffix == ".csv":
        return set(path.read_text().splitlines()[0].split(","))
    if path.suffix == ".pt":
        return set(torch.load(path, weights_only=True))
    raise AssertionError(f"no rule to read the keys of {path}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Path:
    """Every stage's files on a quick setting (the He stage through the pipeline: run.json and
    stage.json; the rest called directly, on small subsets)."""
    run = tmp_path_factory.mktemp("docs")
    study = StudyConfig(
        quick=True,
        device="cpu",
        data_dir=str(real_data_dir),
        overrides={"heinit": {"samples": 30_000, "batches": 30, "depth": 6, "width": 32}},
    )
    run_study(run, study, only=["heinit"], progress=False, echo=lambda line: None)
    tune = hyperparam_tuning(
        run / "tune",
        TuneConfig.quick(n_trials=2, max_train=500, reference=True),
        data_dir=real_data_dir,
    )
    run_classifier(
        run / "classifier",
        tune.best_params,
        ClassifierConfig.quick(epochs=1, max_train=2000, ablation=True),
        data_dir=real_data_dir,
    )
    run_landscape(
        run / "landscape",
        LandscapeConfig.quick(model="mlp_3x30"),
        data_dir=real_data_dir,
        progress=False,
    )
    run_autoencoder(
        run / "autoencoder", AutoencoderConfig.quick(), progress=False, data_dir=real_data_dir
    )
    return run


def test_the_doc_names_files_that_exist() -> None:
    assert {
        "run.json",
        "heinit/stage.json",
        "heinit/results.json",
        "tune/best.json",
        "classifier/test.json",
        "classifier/model.pt",
        "landscape/surface.npz",
        "autoencoder/metrics.json",
    } <= set(documented())


@pytest.mark.parametrize("relative", sorted(documented()))
def test_documented_keys_are_exactly_the_written_ones(run_dir: Path, relative: str) -> None:
    listed = documented()[relative]
    path = run_dir / relative
    assert path.is_file(), f"the fixture did not write {relative}"
    keys = written_keys(path)
    patterns = {key[:-1] for key in listed if key.endswith("*")}
    plain = listed - {key for key in listed if key.endswith("*")}
    covered = {key for key in keys if any(key.startswith(p) for p in patterns)}
    assert keys - covered == plain, (relative, sorted(keys - covered ^ plain))
