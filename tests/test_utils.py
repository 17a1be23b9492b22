"""Tests of ``fashionlab.utils``: atomic writes, JSON helpers, seeding, device choice."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionlab.errors import ConfigError
from fashionlab.utils import (
    atomic_path,
    atomic_save_figure,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    resolve_device,
    seed_everything,
)


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("interrupt", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_atomic_path_keeps_the_old_file_when_the_writer_raises(
    tmp_path: Path, interrupt: BaseException
) -> None:
    target = atomic_write_text(tmp_path / "result.json", "old")
    with pytest.raises(type(interrupt)):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("half-writ")
            raise interrupt
    assert target.read_text() == "old"
    assert _only(tmp_path) == ["result.json"]  # no temp file left


def test_atomic_write_json_keeps_the_old_file_on_a_serialisation_error(tmp_path: Path) -> None:
    target = atomic_write_json(tmp_path / "metrics.json", {"acc": 0.5})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        atomic_write_json(target, {"acc": 0.9, "model": object()})
    assert read_json(target) == {"acc": 0.5}
    assert _only(tmp_path) == ["metrics.json"]


def test_atomic_writes_roundtrip(tmp_path: Path) -> None:
    obj = {
        "int": np.int64(3),
        "float": np.float32(0.25),
        "array": np.arange(3),
        "tensor": torch.tensor([1.5, 2.0]),
        "path": Path("runs/x"),
        "device": torch.device("cpu"),
        "nested": [1, {"a": None}],
    }
    assert read_json(atomic_write_json(tmp_path / "a" / "b.json", obj)) == {
        "int": 3,
        "float": 0.25,
        "array": [0, 1, 2],
        "tensor": [1.5, 2.0],
        "path": "runs/x",
        "device": "cpu",
        "nested": [1, {"a": None}],
    }
    assert atomic_write_bytes(tmp_path / "c.bin", b"\x00\xff").read_bytes() == b"\x00\xff"
    assert atomic_write_text(tmp_path / "c.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    grid = np.linspace(0, 1, 12).reshape(3, 4)
    npz = atomic_save_npz(tmp_path / "surface.npz", grid_losses=grid, alphas=np.arange(3))
    assert npz.name == "surface.npz"  # np.savez would append .npz to a name; a file handle keeps it
    with np.load(npz) as arrays:
        assert sorted(arrays.files) == ["alphas", "grid_losses"] and np.array_equal(
            arrays["grid_losses"], grid
        )


def test_atomic_save_figure_format_from_suffix(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    try:
        png = atomic_save_figure(fig, tmp_path / "f.png")
        pdf = atomic_save_figure(fig, tmp_path / "f.pdf")
    finally:
        plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert _only(tmp_path) == ["f.pdf", "f.png"]


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    """Not mkstemp's 0600: a new file follows the umask, a replaced file keeps its mode."""
    old_umask = os.umask(0o027)
    try:
        created = atomic_write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE(created.stat().st_mode) == 0o640
        existing = tmp_path / "existing.txt"
        existing.write_text("old")
        existing.chmod(0o604)
        atomic_write_text(existing, "new")
        assert stat.S_IMODE(existing.stat().st_mode) == 0o604
    finally:
        os.umask(old_umask)


def test_seed_everything_seeds_python_numpy_and_torch() -> None:
    def draw(generator: torch.Generator) -> tuple:
        return (
            random.random(),
            float(np.random.rand()),
            float(torch.rand(1)),
            float(torch.rand(1, generator=generator)),
        )

    first = draw(seed_everything(123))
    assert draw(seed_everything(123)) == first
    assert draw(seed_everything(124)) != first
    for bad in (-1, 1.5, "0"):
        with pytest.raises(ConfigError, match=r"seed must be an integer from 0 to 2\*\*63 - 1"):
            seed_everything(bad)  # type: ignore[arg-type]


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(
            ConfigError, match=f"--device {spec}: CUDA is not available.*--device cpu"
        ):
            resolve_device(spec)
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N, got 'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        resolve_device("cuda:3")
    with pytest.raises(ConfigError, match="not a valid device"):
        resolve_device("cuda:x")
