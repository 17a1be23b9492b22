"""Tests of fashionlab.experiments.autoencoder (about 30 s on 2 CPU cores)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fashionlab.atomic import read_json
from fashionlab.checkpoint import load_model, save_checkpoint
from fashionlab.data import CLASSES, FastLoader, Split, load_test, load_train, stratified_split
from fashionlab.errors import CheckpointError, ConfigError
from fashionlab.experiments.autoencoder import (
    AutoencoderConfig,
    BatchedFashionMNIST,
    analysis,
    load_autoencoder,
    make_loaders,
    reconstruction_errors,
    run_autoencoder,
    textbook_loader,
    torchvision_loader,
    train_autoencoder,
)
from fashionlab.models import MLP, Autoencoder, build_autoencoder
from fashionlab.runtime import seed_everything
from synthetic_data import SyntheticData, read_split


@pytest.fixture(scope="module")
def test_split(synthetic: SyntheticData) -> Split:
    """The synthetic test file's 500 images."""
    return read_split(synthetic, "test")


# --- architecture ---------------------------------------------------------------------------------


def test_architecture_is_the_assignments() -> None:
    model = Autoencoder()
    kinds = [type(m) for m in model.encoder] + [type(m) for m in model.decoder]
    assert kinds == [
        nn.Linear,
        nn.ReLU,
        nn.Linear,
        nn.ReLU,
        nn.Linear,
        nn.ReLU,
        nn.Linear,
        nn.Sigmoid,
    ]
    shapes = [
        (m.in_features, m.out_features)
        for m in (*model.encoder, *model.decoder)
        if isinstance(m, nn.Linear)
    ]
    assert shapes == [(784, 128), (128, 64), (64, 128), (128, 784)]
    # weights + biases of the four layers, counted by hand
    expected = (784 * 128 + 128) + (128 * 64 + 64) + (64 * 128 + 128) + (128 * 784 + 784)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_encode_decode_forward() -> None:
    torch.manual_seed(0)
    model = Autoencoder()
    x = torch.rand(5, 784)
    code = model.encode(x)
    assert code.shape == (5, 64) and bool((code >= 0).all())  # ReLU bottleneck
    out = model(x)
    assert out.shape == (5, 784) and bool(((out > 0) & (out < 1)).all())  # sigmoid output
    torch.testing.assert_close(out, model.decode(code), rtol=0, atol=0)


def test_build_autoencoder_refuses_other_configs() -> None:
    assert (
        build_autoencoder({"input_dim": 784, "hidden_units": 128, "code_units": 64}).config
        == Autoencoder().config
    )
    with pytest.raises(ConfigError, match="not an autoencoder config"):
        build_autoencoder({"hidden_layers": 2, "units": 50})


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("epochs", 0, "epochs"),
        ("epochs", -3, "epochs"),
        ("lr", 0.0, "lr"),
        ("lr", -1e-3, "lr"),
        ("lr", float("nan"), "lr"),
        ("batch_size", 0, "batch_size"),
        ("latent_map", "umap", "latent map"),
        ("images", (3, 3), "two different"),
        ("loader", "pillow", "loader"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        AutoencoderConfig(**{field: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_bad_image_index_fails_before_anything_is_written(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="500 is outside the test set"):
        run_autoencoder(
            tmp_path,
            AutoencoderConfig.quick(images=(1, 500), train_size=1000),
            progress=False,
            data_dir=synthetic_data_dir,
        )
    assert not any(tmp_path.iterdir())


def test_choose_images_default_takes_two_classes(test_split: Split) -> None:
    i, j = analysis.choose_images(test_split.labels)
    assert i != j and int(test_split.labels[i]) != int(test_split.labels[j])
    assert analysis.choose_images(test_split.labels, (7, 42)) == (7, 42)


# --- checkpoints ----------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = Autoencoder()
    save_checkpoint(tmp_path / "ae.pt", model, kind="autoencoder", config=model.config)
    loaded = load_model(tmp_path / "ae.pt", expect_kind="autoencoder")
    assert isinstance(loaded, Autoencoder) and not loaded.training
    x = torch.rand(4, 784)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    mlp = MLP(2, 50)
    save_checkpoint(tmp_path / "mlp.pt", mlp, kind="mlp", config=mlp.config)
    for load in (
        lambda: load_model(tmp_path / "mlp.pt", expect_kind="autoencoder"),
        lambda: load_autoencoder(tmp_path / "mlp.pt"),
    ):
        with pytest.raises(CheckpointError) as info:
            load()
        assert "'mlp'" in str(info.value) and "'autoencoder'" in str(info.value)


# --- data paths -----------------------------------------------------------------------------------


def test_default_config_loads_with_torchvision(synthetic_data_dir: Path) -> None:
    """The stage's default: torchvision's FashionMNIST read from the raw files, ToTensor(), and a
    DataLoader that serves the batches."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Subset
    from torchvision import datasets, transforms

    assert AutoencoderConfig().loader == "torchvision"
    assert AutoencoderConfig.quick().loader == "torchvision"
    train, test = load_train(synthetic_data_dir), load_test(synthetic_data_dir)
    train_batches, test_batches = make_loaders(
        AutoencoderConfig.quick(train_size=1000), train, test, data_dir=synthetic_data_dir
    )
    for loader, split in ((train_batches, train), (test_batches, test)):
        assert isinstance(loader, DataLoader)
        dataset = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
        assert isinstance(dataset, BatchedFashionMNIST)
        assert type(dataset).__mro__[1] is datasets.FashionMNIST
        assert isinstance(dataset.transform, transforms.ToTensor)
        assert dataset.train == (split is train)
        assert Path(dataset.raw_folder).parts[-2:] == ("FashionMNIST", "raw")
        assert torch.equal(dataset.data, split.images)  # torchvision's own reading of the raw files
    assert isinstance(train_batches.sampler, BatchSampler) and train_batches.batch_size is None
    assert isinstance(train_batches.sampler.sampler, RandomSampler)
    assert len(train_batches) == -(-1000 // 32)


def test_the_three_paths_yield_identical_tensors(
    synthetic_data_dir: Path, test_split: Split
) -> None:
    """torchvision (batched), textbook (per sample) and fast: the same x and y, bit for bit."""
    fast = FastLoader(test_split, 100, shuffle=False, flatten=False)
    textbook = textbook_loader(False, 100, data_dir=synthetic_data_dir)  # ToTensor per PIL image
    batched = torchvision_loader(False, 100, data_dir=synthetic_data_dir)  # ToTensor once
    batches = 0
    for (x_fast, y_fast), (x_book, y_book), (x_tv, y_tv) in zip(
        fast, textbook, batched, strict=True
    ):
        assert x_book.shape == x_fast.shape == x_tv.shape == (100, 1, 28, 28)
        assert x_book.dtype == x_fast.dtype == x_tv.dtype == torch.float32
        assert y_book.dtype == y_fast.dtype == y_tv.dtype == torch.int64
        assert torch.equal(x_fast, x_book) and torch.equal(y_fast, y_book)
        assert torch.equal(x_tv, x_book) and torch.equal(y_tv, y_book)
        batches += 1
    assert batches == 5
    # the same indices, scattered and negative, through both datasets' __getitem__
    dataset = batched.dataset
    index = [499, 0, 321, 17, -1, 250]
    x, y = dataset[index]
    plain = textbook.dataset
    assert torch.equal(x, torch.stack([plain[i][0] for i in index]))
    assert y.tolist() == [plain[i][1] for i in index] == test_split.labels[index].tolist()
    one_x, one_y = dataset[321]
    assert torch.equal(one_x, plain[321][0]) and one_y == plain[321][1] and isinstance(one_y, int)


def test_torchvision_loader_draws_the_textbook_order(synthetic_data_dir: Path) -> None:
    """Same seed: the batched loader yields the per-sample loader's batches, epoch after epoch."""
    train = load_train(synthetic_data_dir)
    indices, _ = stratified_split(train.labels, len(train) - 200, 7)
    book = textbook_loader(True, 32, seed=7, indices=indices, data_dir=synthetic_data_dir)
    batched = torchvision_loader(True, 32, seed=7, indices=indices, data_dir=synthetic_data_dir)
    epochs = []
    for _ in range(2):
        pairs = list(zip(book, batched, strict=True))
        assert len(pairs) == 7 and pairs[-1][0][0].shape == (200 - 6 * 32, 1, 28, 28)
        for (x_book, y_book), (x_tv, y_tv) in pairs:
            assert torch.equal(x_book, x_tv) and torch.equal(y_book, y_tv)
        epochs.append(torch.cat([y for (_, y), _ in pairs]))
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch
    other = torch.cat(
        [
            y
            for _, y in torchvision_loader(
                True, 32, seed=8, indices=indices, data_dir=synthetic_data_dir
            )
        ]
    )
    assert not torch.equal(other, epochs[0])
    assert torch.equal(other.sort().values, epochs[0].sort().values)


def test_both_paths_train_on_the_same_subset(synthetic_data_dir: Path) -> None:
    train, test = load_train(synthetic_data_dir), load_test(synthetic_data_dir)
    config = AutoencoderConfig(train_size=300, batch_size=50, seed=3)
    fast_train, _ = make_loaders(dataclasses.replace(config, loader="fast"), train, test)
    tv_train, _ = make_loaders(config, train, test, data_dir=synthetic_data_dir)
    fast_x = torch.cat([x for x, _ in fast_train])
    tv_x = torch.cat([x.flatten(1) for x, _ in tv_train])
    assert fast_x.shape == tv_x.shape == (300, 784)
    # the same images, bit for bit (each loader shuffles in its own order)
    assert sorted(row.numpy().tobytes() for row in fast_x) == sorted(
        row.numpy().tobytes() for row in tv_x
    )


# --- training -------------------------------------------------------------------------------------


def _reference_training(
    model: nn.Module, batches: list[torch.Tensor], lr: float, epochs: int
) -> list[float]:
    """The assignment's loop written out: flatten, forward, MSE, zero_grad, backward, Adam step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    means = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for x in batches:
            x = x.reshape(-1, 784)
            loss = ((model(x) - x) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(x), count + len(x)
        means.append(total / count)
    return means


def test_training_matches_a_written_out_reference(tiny_train_val: tuple[Split, Split]) -> None:
    train, val = tiny_train_val
    train = train.subset(500, seed=0)
    config = AutoencoderConfig(epochs=2, batch_size=64, lr=2e-3, train_size=500)
    seed_everything(0)
    model = Autoencoder()
    reference = Autoencoder()
    reference.load_state_dict(model.state_dict())
    # a non-shuffling loader so that the reference sees the same batches in the same order
    fit = train_autoencoder(
        model,
        FastLoader(train, 64, shuffle=False, flatten=False),
        config,
        test_batches=FastLoader(val, 100, shuffle=False),
    )
    expected = _reference_training(
        reference, [x for x, _ in FastLoader(train, 64, shuffle=False)], 2e-3, 2
    )
    assert fit.history.epoch == [1, 2] and fit.steps == 2 * 8 and not fit.diverged
    np.testing.assert_allclose(fit.history.train_mse, expected, rtol=1e-5)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    # the recorded test MSE is nn.MSELoss over the whole validation set
    x_val, _ = val.tensors()
    with torch.no_grad():
        assert fit.history.test_mse[-1] == pytest.approx(
            float(F.mse_loss(model.eval()(x_val), x_val)), rel=1e-5
        )
    assert fit.history.train_mse[1] < fit.history.train_mse[0]


def test_torchvision_path_trains_and_progress_can_be_off(
    synthetic_data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    train, test = load_train(synthetic_data_dir), load_test(synthetic_data_dir)
    config = AutoencoderConfig(epochs=1, train_size=640, batch_size=64)
    train_batches, _ = make_loaders(config, train, test, data_dir=synthetic_data_dir)
    seed_everything(0)
    fit = train_autoencoder(Autoencoder(), train_batches, config, progress=False)
    assert (
        fit.steps == 10 and math.isfinite(fit.history.train_mse[0]) and fit.history.test_mse == []
    )
    assert capsys.readouterr().err == ""


def test_reconstruction_errors_and_per_class_mse(test_split: Split) -> None:
    torch.manual_seed(0)
    model = Autoencoder()
    subset = test_split.subset(300, seed=0)
    errors, labels = reconstruction_errors(model, subset)
    x, y = subset.tensors()
    with torch.no_grad():
        per_image = ((model(x) - x) ** 2).mean(1)
    torch.testing.assert_close(errors, per_image.double(), rtol=1e-6, atol=0)
    assert torch.equal(labels, y)
    per_class = analysis.per_class_mse(errors, labels)
    assert list(per_class) == list(CLASSES)
    counts = torch.bincount(labels, minlength=10).double()
    weighted = sum(per_class[name] * counts[k] for k, name in enumerate(CLASSES)) / counts.sum()
    assert float(weighted) == pytest.approx(float(errors.mean()), rel=1e-9)


# --- analysis -------------------------------------------------------------------------------------


def test_pca_2d_matches_sklearn() -> None:
    from sklearn.decomposition import PCA

    codes = torch.randn(500, 64, generator=torch.Generator().manual_seed(0)) * torch.linspace(
        3, 0.1, 64
    )
    xy, ratio = analysis.pca_2d(codes)
    reference = PCA(n_components=2, svd_solver="full").fit(codes.double().numpy())
    expected = reference.transform(codes.double().numpy())
    signs = np.sign(np.sum(xy * expected, axis=0))  # components are defined up to sign
    np.testing.assert_allclose(xy * signs, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ratio, reference.explained_variance_ratio_, rtol=1e-6)


def test_pca_baseline_mse_matches_sklearn() -> None:
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(1)
    train = torch.rand(400, 50, generator=g) * torch.linspace(1, 0.05, 50)
    test = torch.rand(100, 50, generator=g) * torch.linspace(1, 0.05, 50)
    reference = PCA(n_components=8, svd_solver="full").fit(train.double().numpy())
    rebuilt = reference.inverse_transform(reference.transform(test.double().numpy()))
    expected = float(np.mean((rebuilt - test.double().numpy()) ** 2))
    got = analysis.pca_reconstruction_mse(train, test, 8)
    assert got == pytest.approx(expected, rel=1e-9)
    assert analysis.pca_reconstruction_mse(train, test, 50) == pytest.approx(0.0, abs=1e-20)


def test_linear_probe_separates_what_is_separable() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    centres = np.eye(3, 8) * 10
    x = centres[y] + rng.normal(size=(600, 8))
    separable = analysis.linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert separable.test_accuracy > 0.99 and separable.converged
    noise = analysis.linear_probe(
        x[:400], rng.permutation(y[:400]), x[400:], rng.permutation(y[400:])
    )
    assert noise.test_accuracy < 0.5  # chance is 1/3


@pytest.mark.slow
def test_cli_stage_writes_everything(real_data_dir: Path, tmp_path: Path) -> None:
    from fashionlab.cli import main

    code = main(
        [
            "autoencoder",
            "--quick",
            "--epochs",
            "1",
            "--train-size",
            "2000",
            "--probe-train-size",
            "500",
            "--images",
            "5",
            "9",
            "--out",
            str(tmp_path),
            "--data-dir",
            str(real_data_dir),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    stage = tmp_path / "autoencoder"
    for name in (
        "model.pt",
        "history.json",
        "metrics.json",
        "reconstructions.png",
        "reconstructions.pdf",
        "latent_map.png",
        "latent_map.pdf",
        "latent_map.npz",
    ):
        assert (stage / name).stat().st_size > 0, name
    metrics = read_json(stage / "metrics.json")
    assert list(metrics["per_class_mse"]) == list(CLASSES)
    assert [image["index"] for image in metrics["images"]] == [5, 9]
    assert (
        metrics["epochs"] == 1
        and metrics["train_size"] == 2000
        and metrics["probe"]["train_size"] == 500
    )
    assert metrics["loader"] == "torchvision"  # the assignment's data loading, by default
    assert 0.1 < metrics["probe_code_accuracy"] <= 1 and 0.1 < metrics["probe_pixel_accuracy"] <= 1
    assert read_json(stage / "history.json")["test_mse"] == [pytest.approx(metrics["test_mse"])]
    # the checkpoint reproduces the reported test MSE
    model = load_autoencoder(stage / "model.pt")
    errors, _ = reconstruction_errors(model, load_test(real_data_dir))
    assert float(errors.mean()) == pytest.approx(metrics["test_mse"], rel=1e-6)
    latent = np.load(stage / "latent_map.npz")
    assert latent["xy"].shape == (10_000, 2) and latent["labels"].shape == (10_000,)


def test_cli_bad_input_is_one_line(capsys: pytest.CaptureFixture) -> None:
    from fashionlab.cli import main

    assert main(["autoencoder", "--lr", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "lr" in err[0]


@pytest.mark.slow  # a subprocess (scikit-learn reads /proc/cpuinfo with cat)
def test_latent_map_tsne_option(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 10
    codes = torch.relu(torch.randn(400, 64, generator=generator) + 3 * torch.eye(10, 64)[labels])
    info, files = analysis.latent_map(codes, labels, tmp_path, method="tsne", points=200, seed=0)
    assert info == {"method": "tsne", "points": 200, "explained_variance_ratio": None}
    assert sorted(p.name for p in files) == ["latent_map.npz", "latent_map.pdf", "latent_map.png"]
    saved = np.load(tmp_path / "latent_map.npz")
    assert saved["xy"].shape == (200, 2) and np.isfinite(saved["xy"]).all()
    assert torch.equal(torch.from_numpy(saved["labels"]), labels[torch.from_numpy(saved["index"])])
    assert np.bincount(saved["labels"], minlength=10).tolist() == [20] * 10  # stratified subset
