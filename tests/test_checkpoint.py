"""Tests of ``fashionlab.checkpoint``: save/load roundtrip, and every bad file a CheckpointError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fashionlab.checkpoint import load_checkpoint, load_model, save_checkpoint
from fashionlab.errors import CheckpointError
from fashionlab.models import model_from_name


@pytest.fixture
def trained_mlp() -> torch.nn.Module:
    """An MLP with BatchNorm whose running statistics moved away from their initial values."""
    torch.manual_seed(0)
    model = model_from_name("mlp_2x16_bn_do0.1")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, 784))
    return model.eval()


def test_roundtrip_gives_identical_outputs(trained_mlp: torch.nn.Module, tmp_path: Path) -> None:
    metrics = {
        "test_acc": np.float64(0.875),
        "history": [np.float32(1.5), 0.5],
        "epochs": np.int64(3),
    }
    path = save_checkpoint(
        tmp_path / "ckpt" / "model.pt",
        trained_mlp,
        kind="mlp",
        config=trained_mlp.config,
        metrics=metrics,
    )
    loaded = load_model(path, expect_kind="mlp")
    assert type(loaded) is type(trained_mlp) and not loaded.training
    x = torch.rand(64, 784, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), trained_mlp(x))
    for key, value in trained_mlp.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.checkpoint["config"] == trained_mlp.config
    # NumPy numbers are stored as plain Python (torch.load(weights_only=True) refuses NumPy
    # objects).
    assert loaded.checkpoint["metrics"] == {"test_acc": 0.875, "history": [1.5, 0.5], "epochs": 3}
    assert type(loaded.checkpoint["metrics"]["test_acc"]) is float
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_corrupt_file(trained_mlp: torch.nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "model.pt", trained_mlp, kind="mlp", config=trained_mlp.config
    )
    blob = path.read_bytes()
    for name, content in (
        ("truncated.pt", blob[: len(blob) // 2]),
        ("garbage.pt", b"not a checkpoint" * 10),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="cannot be read") as info:
            load_model(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)


def test_not_a_fashionlab_checkpoint(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a fashionlab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_other_kind_is_refused(trained_mlp: torch.nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "model.pt", trained_mlp, kind="mlp", config=trained_mlp.config
    )
    with pytest.raises(
        CheckpointError, match="holds a model of kind 'mlp'.*expected kind 'autoencoder'"
    ):
        load_model(path, expect_kind="autoencoder")
    with pytest.raises(CheckpointError, match="unknown model kind 'gan'"):
        save_checkpoint(tmp_path / "gan.pt", trained_mlp, kind="gan", config={})


def test_weights_that_do_not_fit_the_config(trained_mlp: torch.nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "model.pt", trained_mlp, kind="mlp", config={**trained_mlp.config, "units": 8}
    )
    with pytest.raises(CheckpointError, match="weights do not fit a mlp"):
        load_model(path)


def test_failed_save_keeps_the_previous_checkpoint(
    trained_mlp: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(
        tmp_path / "model.pt",
        trained_mlp,
        kind="mlp",
        config=trained_mlp.config,
        metrics={"version": 1},
    )

    def failing_save(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="(?i)no space left"):
        save_checkpoint(
            path, trained_mlp, kind="mlp", config=trained_mlp.config, metrics={"version": 2}
        )
    monkeypatch.undo()
    assert load_model(path).checkpoint["metrics"] == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_files_that_stored_the_torch_version_object_still_load(
    trained_mlp: torch.nn.Module, tmp_path: Path
) -> None:
    """Checkpoints written before the fix kept ``torch.__version__`` (a TorchVersion, not a str)."""
    path = save_checkpoint(
        tmp_path / "model.pt", trained_mlp, kind="mlp", config=trained_mlp.config
    )
    payload = torch.load(path, weights_only=True)
    payload["versions"] = {"torch": torch.__version__}
    torch.save(payload, path)
    assert load_model(path).checkpoint["config"] == trained_mlp.config
