"""Retrain + test: files, the last-20 values, the checkpoint, refused settings, the CLI (on the
synthetic IDX files: 2,500 train and 500 test images)."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.image
import pytest

from fashionlab import data
from fashionlab.atomic import read_json
from fashionlab.checkpoint import load_model
from fashionlab.errors import ConfigError, FashionLabError
from fashionlab.experiments.classifier import (
    ClassifierConfig,
    format_last_iterations,
    run_classifier,
)
from fashionlab.train import evaluate
from synthetic_data import SIZES

SETTING = {
    "hidden_layers": 3,
    "units": 30,
    "lr": 0.05,
    "batch_size": 64,
    "epochs": 2,
    "l2": 1e-4,
    "momentum": 0.9,
    "schedule": "wsd",
}


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, synthetic):
    out = tmp_path_factory.mktemp("classifier")
    # epochs=None (the default): the setting's own epochs (2); two seeds.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "FILES", synthetic.specs)  # as the fixture synthetic_data_dir does
        result = run_classifier(
            out, SETTING, ClassifierConfig(max_train=2000, seeds=(1, 2)), data_dir=synthetic.folder
        )
    return out, result


def test_files_and_numbers_are_consistent(retrained, synthetic_data_dir) -> None:
    out, result = retrained
    test = read_json(out / "test.json")
    history = read_json(out / "history.json")
    assert test == result.test
    assert test["train_examples"] == 2000 and test["test_examples"] == SIZES["test"]
    assert test["last20_losses"] == history["train_loss"][-20:]
    assert test["last20_steps"] == list(
        range(len(history["train_loss"]) - 19, len(history["train_loss"]) + 1)
    )
    assert len(history["train_loss"]) == test["steps"] == 2 * -(-2000 // 64)
    assert test["params"] == SETTING and test["model"]["hidden_layers"] == 3
    assert 0.6 < test["test_accuracy"] <= 1.0  # 2 epochs on 2,000 images; chance is 0.1
    # Every seed tested once; their mean and sample standard deviation.
    first, second = test["test_accuracies"]
    assert test["seeds"] == [1, 2] and test["last20_seed"] == 1 and first != second
    assert test["test_accuracy"] == pytest.approx((first + second) / 2)
    assert test["test_accuracy_std"] == pytest.approx(abs(first - second) / 2**0.5)
    assert test["test_loss"] == pytest.approx(sum(test["test_losses"]) / 2)
    # Independent check: reload the checkpoint (the first seed's) and evaluate it ourselves.
    model = load_model(out / "model.pt", expect_kind="mlp")
    loss, accuracy = evaluate(model, data.load_test(synthetic_data_dir))
    assert accuracy == first and loss == pytest.approx(test["test_losses"][0], rel=1e-6)
    assert model.checkpoint["metrics"]["test_accuracies"][0] == first


def test_figure_files_are_written(retrained) -> None:
    out, _ = retrained
    image = matplotlib.image.imread(out / "last20.png")
    assert image.ndim == 3 and image.shape[0] > 200
    pdf = (out / "last20.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    from pypdf import PdfReader

    text = PdfReader(out / "last20.pdf").pages[0].extract_text()
    accuracy = read_json(out / "test.json")["test_accuracies"][0]  # the first seed's figure
    assert f"{100 * accuracy:.2f}%" in text


def test_terminal_lines_show_the_20_values_and_the_accuracy(retrained) -> None:
    _, result = retrained
    lines = format_last_iterations(result.test).splitlines()
    test = result.test
    several = len(test["test_accuracies"]) > 1
    assert len(lines) == 22 + several
    assert lines[1].endswith(f"{test['last20_losses'][0]:.4f}")
    # each accuracy says which it is: the seed of these iterations, then the mean over seeds
    seed = f"seed {test['last20_seed']} (these iterations): {100 * test['test_accuracies'][0]:.2f}%"
    assert seed in lines[21]
    if several:
        mean_std = f"{100 * test['test_accuracy']:.2f} ± {100 * test['test_accuracy_std']:.2f}%"
        assert "(mean ± std)" in lines[-1] and mean_std in lines[-1]


def test_same_seed_same_model(synthetic_data_dir, tmp_path) -> None:
    config = ClassifierConfig(max_train=500, epochs=1, seeds=(4,))
    first = run_classifier(tmp_path / "a", SETTING, config, data_dir=synthetic_data_dir)
    second = run_classifier(tmp_path / "b", SETTING, config, data_dir=synthetic_data_dir)
    assert first.test["last20_losses"] == second.test["last20_losses"]
    assert first.test_accuracy == second.test_accuracy


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"lr": 0.0}, "learning rate"),
        ({"hidden_layers": 0}, "hidden_layers"),
        ({"units": 0}, "units"),
        ({"activation": "swish"}, "unknown activation"),
        ({"dropout": 1.0}, "dropout"),
        ({"batch_size": 4096}, "larger than the training set"),
        ({"optimizer": "adam"}, "unknown setting keys"),
    ],
)
def test_impossible_settings_are_refused_before_training(
    tmp_path, synthetic_data_dir, caplog, change, fragment
):
    with (
        caplog.at_level(logging.INFO, logger="fashionlab"),
        pytest.raises(ConfigError, match=fragment),
    ):
        run_classifier(
            tmp_path,
            SETTING | change,
            ClassifierConfig(max_train=2000),
            data_dir=synthetic_data_dir,
        )
    assert not any("retraining" in record.message for record in caplog.records), "training started"
    assert not any(tmp_path.iterdir())


def test_a_diverged_retrain_is_an_error_not_a_test(tmp_path, synthetic_data_dir) -> None:
    with pytest.raises(FashionLabError, match="diverged"):
        run_classifier(
            tmp_path,
            SETTING | {"lr": 1e4},
            ClassifierConfig(epochs=1, max_train=1000),
            data_dir=synthetic_data_dir,
        )
    assert read_json(tmp_path / "history.json")["diverged"] is True
    assert {path.name for path in tmp_path.iterdir()} == {"history.json"}  # no test, no model


def test_cli_train_and_its_errors(tmp_path: Path, synthetic_data_dir: Path, capsys) -> None:
    from fashionlab.cli import main

    base = [
        "train",
        "--out",
        str(tmp_path),
        "--data-dir",
        str(synthetic_data_dir),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(base + ["--model", "mlp_3x30_elu", "--epochs", "2", "--max-train", "1000"]) == 0
    out = capsys.readouterr().out
    assert (
        "test accuracy" in out
        and len([line for line in out.splitlines() if "  step " in line]) == 20
    )
    written = read_json(tmp_path / "train" / "test.json")
    assert (
        written["model"]["activation"] == "elu"
        and written["epochs"] == 2
        and written["train_examples"] == 1000
    )
    assert main(base + ["--lr", "0"]) == 1
    err = capsys.readouterr().err
    assert err.strip().startswith("error:") and "learning rate" in err and "Traceback" not in err
