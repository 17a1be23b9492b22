"""Tests of the shared core helpers: atomic writes and JSON (``atomic``), seeding and device
choice (``runtime``), the run folder's lock (``locks``: what it removes and which folders it
takes), the thread policy (``threads``)."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionlab.atomic import (
    TEMP_LIST,
    atomic_path,
    atomic_save_figure,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from fashionlab.errors import ConfigError, FolderNotOursError
from fashionlab.figures import pyplot
from fashionlab.locks import lock_folder
from fashionlab.runtime import resolve_device, seed_everything
from fashionlab.threads import blas_threads, pin_threads, torch_threads


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
    plt = pyplot()
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


def test_the_lock_removes_no_temp_file_but_the_listed_ones_of_ours(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with lock_folder(run):
        atomic_write_text(run / "heinit" / "results.json", "{}")
    users = [
        run / ".draft.tmp",
        run / "sub" / "dir" / ".ch1.tex.tmp",
        run / ".fashionlab-tmp.not-listed",
        tmp_path / ".fashionlab-tmp.outside",
    ]
    for path in users:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    # A list that names files without our prefix, or outside the folder, removes none of them.
    listed = [".draft.tmp", "sub/dir/.ch1.tex.tmp", "../.fashionlab-tmp.outside", str(users[3])]
    (run / TEMP_LIST).write_text("\n".join(listed) + "\n")
    with lock_folder(run):
        atomic_write_text(run / "heinit" / "results.json", "{}")
    assert all(path.read_text() == "mine" for path in users)
    assert (run / "heinit" / "results.json").read_text() == "{}"


def test_the_lock_refuses_a_folder_of_foreign_files_unless_forced(tmp_path: Path) -> None:
    folder = tmp_path / "thesis"
    (folder / "tune").mkdir(parents=True)
    (folder / "tune" / "best.json").write_text("mine")
    (folder / "report.pdf").write_text("mine too")
    with pytest.raises(FolderNotOursError, match="did not write") as refused:
        with lock_folder(folder, force_flag="--force all"):
            pytest.fail("a foreign folder was locked")
    assert "--force all" in str(refused.value.fix) and "empty or new folder" in refused.value.fix
    assert _only(folder) == ["report.pdf", "tune"]  # nothing written, not even a lock file
    with lock_folder(folder, force=True, replaces=["report.pdf", "tune", "heinit"]):
        assert not (folder / "report.pdf").exists() and not (folder / "tune").exists()
    assert (folder / "report.pdf.previous").read_text() == "mine too"
    assert (folder / "tune.previous" / "best.json").read_text() == "mine"
    with lock_folder(folder):  # marked as ours now
        pass


def test_the_lock_takes_new_and_empty_folders_and_removes_one_it_made_for_nothing(
    tmp_path: Path,
) -> None:
    with lock_folder(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run").is_dir()
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with lock_folder(tmp_path / "empty"):
        atomic_write_text(tmp_path / "empty" / "sub" / "a.txt", "a")
    (tmp_path / "empty" / "sub" / "b.txt").write_text("a user's file in a folder of ours")
    with lock_folder(tmp_path / "empty"):
        pass


def test_torch_threads_gives_the_callers_setting_back() -> None:
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with torch_threads(None):  # None: torch's setting is left alone
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(2):  # also when the body fails
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_pin_threads_sets_the_process_for_good() -> None:
    before = torch.get_num_threads()
    try:
        pin_threads(2)
        assert torch.get_num_threads() == 2
        pin_threads(None)  # None: left as it is
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_blas_threads_limits_the_pools_and_gives_them_back() -> None:
    from threadpoolctl import threadpool_info

    before = [pool["num_threads"] for pool in threadpool_info()]
    assert before  # NumPy's BLAS is loaded
    with blas_threads(1):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert [pool["num_threads"] for pool in threadpool_info()] == before
