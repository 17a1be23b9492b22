"""Every stage config converts to its canonical dict and back (nested configs, tuples), and every
stage of the study's table resolves an instance of the config dataclass it declares."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from fashionlab.atomic import read_json
from fashionlab.canonical import Canonical
from fashionlab.errors import ConfigError
from fashionlab.experiments.autoencoder import AutoencoderConfig
from fashionlab.experiments.classifier import REFERENCE, ClassifierConfig, TuneConfig
from fashionlab.experiments.heinit import HeInitConfig
from fashionlab.experiments.landscape import LandscapeConfig
from fashionlab.experiments.landscape.config import TUNED
from fashionlab.pipeline import Stage, StudyConfig, load_study_config, run_stages
from fashionlab.pipeline.stages import STAGES
from fashionlab.report import ReportConfig
from fashionlab.train import TrainConfig

# One config per stage config class, every field that holds a tuple or a nested config set away
# from its default.
CONFIGS = [
    HeInitConfig(samples=60_000, batches=30, depth=6, width=32, seed=4),
    TuneConfig(
        space="plain",
        n_trials=5,
        epochs=(1, 3),
        enqueue=(dict(REFERENCE["plain"]),),
        storage="postgresql://ann:pw@db.lab/study",
        timeout_s=30.5,
    ),
    ClassifierConfig(epochs=2, seeds=(5, 6), label="variant", ablation=True),
    LandscapeConfig(
        model={"hidden_layers": 2, "units": 8},
        train=TrainConfig(epochs=4, batch_size=50, lr=0.1, schedule="constant"),
        subset=500,
        plateau_tol=None,
    ),
    AutoencoderConfig(epochs=1, images=(3, 7), latent_map="tsne", train_size=None),
    ReportConfig(authors=("Ada Lovelace", "Alan Turing"), course="CS 000"),
    TrainConfig(epochs=3, momentum=0.9, nesterov=True, schedule="wsd", decay=0.5),
]


def _plain_json(value: Any) -> bool:
    """Whether ``value`` holds only what JSON holds (dicts, lists, str, numbers, bools, None)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(item) for item in value)
    return value is None or isinstance(value, (str, int, float, bool))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_config_round_trips_through_its_canonical_dict(config: Canonical) -> None:
    plain = config.to_dict()
    assert _plain_json(plain), plain
    assert set(plain) == {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    assert type(config).from_dict(plain) == config
    assert type(config).from_dict(json.loads(json.dumps(plain))) == config  # as run.json has it
    assert json.dumps(type(config).from_dict(plain).to_dict(), sort_keys=True) == json.dumps(
        plain, sort_keys=True
    )


def test_nested_configs_and_tuples_come_back_typed() -> None:
    landscape = LandscapeConfig.from_dict({"train": {"epochs": 4, "batch_size": 50}})
    assert landscape.train == TrainConfig(epochs=4, batch_size=50)
    assert LandscapeConfig().to_dict()["train"] == TrainConfig(150, 50, 0.05).to_dict()
    assert AutoencoderConfig.from_dict({"images": [3, 7]}).images == (3, 7)
    tune = TuneConfig.from_dict({"epochs": [1, 3], "enqueue": [dict(REFERENCE["plain"])]})
    assert tune.epochs == (1, 3) and tune.enqueue == (REFERENCE["plain"],)
    assert ClassifierConfig.from_dict({"seeds": [1, 2]}).seeds == (1, 2)
    assert ReportConfig.from_dict({"authors": ["A. Author"]}).authors == ("A. Author",)


def test_from_dict_refuses_an_unknown_key_naming_the_nearest() -> None:
    with pytest.raises(ConfigError, match="has no setting 'epoch'; did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="TrainConfig has no setting 'lrate'"):
        LandscapeConfig.from_dict({"train": {"lrate": 0.1}})
    with pytest.raises(ConfigError, match="images"):
        AutoencoderConfig.from_dict({"images": [1, 2, 3]})


def test_a_callable_model_is_recorded_by_its_name() -> None:
    def tiny_net() -> Any:
        raise AssertionError("not called")

    assert LandscapeConfig(model=tiny_net).to_dict()["model"].endswith("tiny_net")


def test_presets_are_named_constructors_of_the_config() -> None:
    study = LandscapeConfig.for_study(seed=2)
    assert study.model == TUNED and study.threads == 1 and study.seed == 2
    quick = LandscapeConfig.for_study(quick=True, train={"epochs": 2, "batch_size": 50})
    assert quick.resolution == LandscapeConfig.quick().resolution and quick.train.epochs == 2
    tuned = {"hidden_layers": 2, "units": 64, "activation": "relu", "dropout": 0.2}
    assert study.with_tuned_model(tuned).model == {
        "hidden_layers": 2,
        "units": 64,
        "activation": "relu",
    }
    fixed = LandscapeConfig(model="mlp_3x30")
    assert fixed.with_tuned_model(tuned) is fixed
    plain = ClassifierConfig.retrain("plain", seed=7)
    assert plain.seeds == (7, 8, 9) and plain.ablation and plain.label == "plain"
    variant = ClassifierConfig.retrain("variant", quick=True, seed=7, label="x")
    assert variant.seeds == (7,) and not variant.ablation and variant.label == "variant"


@pytest.mark.parametrize("quick", [False, True])
def test_every_stage_resolves_the_config_it_declares(tmp_path: Path, quick: bool) -> None:
    toml = tmp_path / "study.toml"
    toml.write_text(
        "[landscape.train]\nepochs = 4\nbatch_size = 50\n[autoencoder]\nimages = [3, 7]\n"
        '[tune]\nepochs = [1, 2]\nmax_train = "all"\n[report]\nauthors = ["A. Author"]\n'
    )
    study = load_study_config(toml, quick=quick, seed=5, device="cpu")
    for stage in STAGES:
        config = stage.resolve(study)
        assert type(config) is stage.config, stage.name
        assert stage.config.from_dict(config.to_dict()) == config, stage.name
        assert stage.resolve(study).to_dict() == config.to_dict(), stage.name  # stable
    resolved = {stage.name: stage.resolve(study) for stage in STAGES}
    assert resolved["landscape"].train == TrainConfig(epochs=4, batch_size=50)
    assert resolved["autoencoder"].images == (3, 7)
    assert resolved["tune"].epochs == (1, 2) and resolved["tune"].max_train is None
    assert resolved["report"].authors == ("A. Author",)
    assert resolved["variant"].label == "variant" and resolved["variant"].device == "cpu"


# --- the engine hands the resolved config itself to the stage ----------------------------------


@dataclasses.dataclass(frozen=True)
class _EchoConfig(Canonical):
    words: tuple[str, ...] = ("a", "b")
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


RESOLVED: list[_EchoConfig] = []
RECEIVED: list[_EchoConfig] = []


def _resolve_echo(study: StudyConfig) -> _EchoConfig:
    config = _EchoConfig.from_dict({"words": ["x", "y"], **study.stage_overrides("echo")})
    RESOLVED.append(config)
    return config


def _run_echo(out: Path, config: _EchoConfig, ctx: Any) -> dict[str, Any]:
    RECEIVED.append(config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "words.txt").write_text(" ".join(config.words))
    return {"headline": " ".join(config.words)}


@pytest.mark.slow  # the real data's checksums and the calibration workload
def test_the_stage_runs_the_very_config_resolve_returned(
    tmp_path: Path, real_data_dir: Path
) -> None:
    stages = (Stage("echo", (), _EchoConfig, _resolve_echo, _run_echo, "echo"),)
    study = StudyConfig(
        device="cpu", data_dir=str(real_data_dir), overrides={"echo": {"train": {"epochs": 2}}}
    )
    RESOLVED.clear()
    RECEIVED.clear()
    (first,) = run_stages(tmp_path, study, stages, progress=False, echo=lambda line: None)
    assert first.status == "ran"
    assert len(RESOLVED) == 1 and len(RECEIVED) == 1 and RECEIVED[0] is RESOLVED[0]
    assert RECEIVED[0].train == TrainConfig(epochs=2) and RECEIVED[0].words == ("x", "y")
    recorded = read_json(tmp_path / "echo" / "stage.json")
    assert recorded["config"] == RESOLVED[0].to_dict()
    assert read_json(tmp_path / "run.json")["config"]["echo"] == RESOLVED[0].to_dict()
    (second,) = run_stages(tmp_path, study, stages, progress=False, echo=lambda line: None)
    assert second.status == "cached" and len(RECEIVED) == 1  # the same config, the same hash
