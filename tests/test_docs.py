"""docs/run-directory.md lists exactly the keys that the stages write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from quick_study import QuickRun

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
def test_documented_keys_are_exactly_the_written_ones(quick_run: QuickRun, relative: str) -> None:
    listed = documented()[relative]
    path = quick_run.folder / relative
    assert path.is_file(), f"the quick run did not write {relative}"
    keys = written_keys(path)
    patterns = {key[:-1] for key in listed if key.endswith("*")}
    plain = listed - {key for key in listed if key.endswith("*")}
    covered = {key for key in keys if any(key.startswith(p) for p in patterns)}
    assert keys - covered == plain, (relative, sorted(keys - covered ^ plain))
