"""Settings checked whole and up front (one ``error:`` line each); storage URLs for odd paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from fashionlab import data
from fashionlab.atomic import read_json
from fashionlab.cli import build_parser, main
from fashionlab.experiments.classifier import TuneConfig, hyperparam_tuning
from fashionlab.pipeline import load_study_config


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _run(tmp_path: Path, toml: str, *extra: str) -> tuple[int, Path]:
    """``fashionlab run --quick --config`` with ``toml``; the data folder does not exist."""
    config = tmp_path / "study.toml"
    config.write_text(toml)
    run = tmp_path / "run"
    code = main(
        [
            "run",
            "--quick",
            "--out",
            str(run),
            "--config",
            str(config),
            "--no-progress",
            "--jobs",
            "1",
            "--data-dir",
            str(tmp_path / "nowhere"),
            *extra,
        ]
    )
    return code, run


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("[tune]\nn_trails = 5\n", ("[tune]", "'n_trails'", "did you mean 'n_trials'")),
        ("[tuning]\nn_trials = 5\n", ("[tuning]", "did you mean 'tune'")),
        ("[report]\ntitle = 'x'\n", ("[report]", "'title'", "settings: authors")),
        (
            "[landscape.train]\nepoch = 3\n",
            ("[landscape.train]", "'epoch'", "did you mean 'epochs'"),
        ),
        ("[autoencoder]\nlatent_mpa = 'tsne'\n", ("[autoencoder]", "did you mean 'latent_map'")),
    ],
)
def test_an_unknown_table_or_key_names_the_nearest_known_one(
    tmp_path: Path, capsys, toml, words
) -> None:
    code, run = _run(tmp_path, toml)
    line = _error_line(capsys)
    assert code == 1 and all(word in line for word in words), line
    assert str(tmp_path / "study.toml") in line
    assert not run.exists()


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("[tune]\nepochs = 3\n", ("[tune] epochs = 3", "a list of integers", "epochs = [3]")),
        ("[tune]\nn_trials = '30'\n", ('[tune] n_trials = "30"', "an integer")),
        ("[heinit]\nz = true\n", ("[heinit] z = true", "a number")),
        ("[autoencoder]\nimages = [1]\n", ("[autoencoder] images = [1]", "a list of 2 integers")),
        ("[autoencoder]\nloader = 'slow'\n", ('loader = "slow"', 'one of "torchvision", "fast"')),
        ("[landscape]\ntrain = 3\n", ("[landscape] train = 3", "a table of TrainConfig settings")),
        ("[tune]\nspace = 'variant'\n", ("[tune] space cannot be set", "remove it")),
    ],
)
def test_a_wrong_type_or_shape_is_one_line_naming_key_value_and_expectation(
    tmp_path: Path, capsys, toml, words
) -> None:
    code, run = _run(tmp_path, toml)
    line = _error_line(capsys)
    assert code == 1 and all(word in line for word in words), line
    assert not run.exists()


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("[landscape]\nmodel = 'mlp_4x5O'\n", ("[landscape]", "mlp_4x5O", "unknown model name")),
        (
            "[landscape]\nmodel = {hidden_layers = 2, unit = 5}\n",
            ("[landscape]", "not an MLP config"),
        ),
        ("[autoencoder]\nepochs = 0\n", ("[autoencoder]", "epochs", "got 0")),
        ("[variant]\nlast_n = 0\n", ("[variant]", "last_n")),
    ],
)
def test_every_stage_setting_is_checked_before_anything_is_written(
    tmp_path: Path, capsys, toml, words
) -> None:
    code, run = _run(tmp_path, toml)
    line = _error_line(capsys)
    assert code == 1 and all(word in line for word in words), line
    assert not run.exists()


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["tune", "--max-train", "0", "--no-retrain"], "--max-train"),
        (["tune", "--retrain-max-train", "0"], "--retrain-max-train"),
        (["train", "--max-train", "0"], "--max-train"),
        (["autoencoder", "--probe-train-size", "0"], "--probe-train-size"),
    ],
)
def test_zero_is_never_all(tmp_path: Path, capsys, argv: list[str], option: str) -> None:
    code = main(
        [
            *argv,
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--data-dir",
            str(tmp_path / "nowhere"),
        ]
    )
    line = _error_line(capsys)
    assert code == 1 and "got 0" in line and f"{option} all" in line, line
    assert not (tmp_path / "run").exists()


def test_zero_is_never_all_in_a_config_file_and_all_is_said_alike_everywhere(
    tmp_path: Path, capsys
) -> None:
    for stage in ("tune", "classifier"):
        code, _ = _run(tmp_path, f"[{stage}]\nmax_train = 0\n")
        line = _error_line(capsys)
        assert code == 1 and f"[{stage}] max_train" in line and 'max_train = "all"' in line, line
    config = tmp_path / "all.toml"
    config.write_text('[tune]\nmax_train = "all"\n[autoencoder]\nprobe_train_size = "all"\n')
    study = load_study_config(config)
    assert study.stage_overrides("tune") == {"max_train": None}
    assert study.stage_overrides("autoencoder") == {"probe_train_size": None}
    parser = build_parser()
    assert parser.parse_args(["train", "--max-train", "all"]).max_train is None
    assert parser.parse_args(["tune", "--max-train", "all"]).max_train is None
    assert parser.parse_args(["autoencoder", "--probe-train-size", "all"]).probe_train_size is None


@pytest.fixture
def train_only(tmp_path: Path, real_data_dir: Path) -> Path:
    """A data folder with the two training files only (links to the real ones)."""
    folder = tmp_path / "train-only"
    folder.mkdir()
    for key in ("train-images", "train-labels"):
        name = data.FILES[key].name + ".gz"
        os.symlink(real_data_dir / name, folder / name)
    return folder


def test_a_run_finds_missing_test_files_before_the_first_stage(
    tmp_path: Path, train_only: Path, capsys
) -> None:
    run = tmp_path / "run"
    assert (
        main(["run", "--quick", "--out", str(run), "--data-dir", str(train_only), "--no-progress"])
        == 1
    )
    line = _error_line(capsys)
    assert data.FILES["test-images"].name in line and "fix:" in line
    assert not run.exists()


def test_train_and_tune_find_missing_test_files_before_training(
    tmp_path: Path, train_only: Path, capsys
) -> None:
    common = ["--out", str(tmp_path / "run"), "--data-dir", str(train_only), "--no-progress"]
    assert main(["train", "--epochs", "1", "--max-train", "1000", *common]) == 1
    assert data.FILES["test-images"].name in _error_line(capsys)
    tune = ["tune", "--trials", "1", "--max-train", "300", "--epochs", "1", *common]
    assert main(tune) == 1
    line = _error_line(capsys)
    assert data.FILES["test-images"].name in line and "--no-retrain" in line
    assert not (tmp_path / "run").exists()
    # Tuning alone reads only the training files.
    assert main([*tune, "--no-retrain"]) == 0
    assert (tmp_path / "run" / "tune" / "best.json").is_file()


# Every character that a URL or Optuna's url.format(...) gives a meaning, and more.
ODD_NAMES = [
    "with space",
    "naïve-漢字",
    "what?",
    "100%",
    "%41",
    "%3Fx",
    "a#b",
    "user@host",
    "c:d",
    "{}",
    "{SCHEMA_VERSION}",
    "x?uri=true&mode=memory",
]


@pytest.fixture(scope="module")
def splits(tiny_train_val):
    train, val = tiny_train_val
    return train.subset(300, seed=2), val.subset(100, seed=2)


# Each case runs a one-trial study (seconds): one in the fast tier, the rest in the full one.
FAST_ODD_NAMES = ("with space",)


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_ODD_NAMES else pytest.param(n, marks=pytest.mark.slow) for n in ODD_NAMES],
)
def test_the_default_storage_lands_in_the_run_folder_for_every_path(
    tmp_path: Path, monkeypatch, splits, name: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative path gone astray would show up here too
    out = tmp_path / name / "tune"
    config = TuneConfig(n_trials=1, max_train=300, epochs=(1,), heartbeat_s=1)
    result = hyperparam_tuning(out, config, splits=splits)
    assert (out / "study.db").is_file()
    assert sorted(os.listdir(tmp_path)) == [name]
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["tune"]
    # best.json and trials.json say where the study is: a URL that leads back to that file, and
    # the folder's name as written wherever a URL allows it.
    storage = read_json(out / "best.json")["storage"]
    assert storage == read_json(out / "trials.json")["storage"] == result.storage
    assert make_url(storage).database == str(out.resolve() / "study.db")
    if not set(name) & set("%?{}"):
        assert storage == f"sqlite:///{out.resolve() / 'study.db'}"


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"tune": {"space": "variant"}}, "cannot be set here"),
        ({"classifier": {"label": "x"}}, "cannot be set here"),
        ({"tune": {"n_trail": 3}}, "n_trials"),
    ],
)
def test_a_study_built_in_code_has_its_tables_checked_too(tmp_path, tables, message) -> None:
    from fashionlab.errors import ConfigError
    from fashionlab.pipeline import StudyConfig, run_study

    study = StudyConfig(quick=True, seed=0, device="cpu", overrides=tables)
    with pytest.raises(ConfigError, match=message):
        run_study(tmp_path / "run", study, progress=False, echo=lambda line: None)
    assert not (tmp_path / "run").exists()  # refused before anything was written
