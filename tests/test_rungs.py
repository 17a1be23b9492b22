"""The tuner's fidelity: a rung value is the value of a finished WSD run of that length, and a
trunk saved after a rung resumes to the same values; a cut-short trial resumes from its trunk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from fashionlab.experiments.classifier import TuneConfig, fork_epoch, hyperparam_tuning
from fashionlab.experiments.classifier.tuning import objective as objective_module
from fashionlab.experiments.classifier.tuning.rungs import epochs_to_score, train_rungs
from fashionlab.models import MLP
from fashionlab.population import fit
from fashionlab.runtime import seed_everything
from fashionlab.train import TrainConfig, decay_epochs

CONFIG = TrainConfig(batch_size=50, lr=0.05, momentum=0.9, l2=1e-4, seed=7, schedule="wsd")


@pytest.fixture(scope="module")
def splits(tiny_train_val):
    train, val = tiny_train_val
    return train.subset(600, seed=3), val.subset(300, seed=3)


def _model(**kwargs) -> MLP:
    seed_everything(CONFIG.seed)
    return MLP(2, 16, **kwargs)


def test_wsd_decays_over_the_last_fifth_at_epoch_boundaries() -> None:
    assert [decay_epochs(r, 0.2) for r in (1, 2, 6, 18, 27)] == [1, 1, 1, 4, 5]
    assert [fork_epoch(r, 0.2) for r in (1, 2, 6, 18)] == [0, 1, 5, 14]


@pytest.mark.parametrize("extra", [{}, {"batchnorm": True, "dropout": 0.3}])
def test_each_rung_value_is_that_of_a_finished_run_of_its_length(splits, extra) -> None:
    train, val = splits
    rungs = (1, 3, 5)
    result = train_rungs(_model(**extra), train, CONFIG, rungs, val=val)
    assert not result.diverged and sorted(result.values) == list(rungs)
    assert result.epochs_trained == 4 + 1 + 1 + 1  # the trunk to epoch 4, one decay per rung
    for rung in rungs:
        run = fit(_model(**extra), train, dataclasses.replace(CONFIG, epochs=rung), val=val)
        assert (run.history.val_acc[-1], run.history.val_loss[-1]) == result.values[rung]


def test_the_epochs_to_score_a_rung_are_what_train_rungs_trains(splits) -> None:
    train, val = splits
    rungs, decay = (1, 3, 5), CONFIG.decay
    whole = train_rungs(_model(), train, CONFIG, rungs, val=val)
    assert epochs_to_score(rungs, 5, decay) == whole.epochs_trained == 7
    assert [epochs_to_score(rungs, r, decay) for r in (1, 3)] == [1, 2 + 1 + 1]
    trunks = []
    train_rungs(_model(), train, CONFIG, rungs, val=val, on_trunk=trunks.append)
    resumed = train_rungs(_model(), train, CONFIG, rungs, val=val, resume=trunks[1])
    trunk = trunks[1]
    assert epochs_to_score(rungs, 5, decay, trunk.epochs, trunk.values) == resumed.epochs_trained


def test_a_saved_trunk_resumes_to_the_same_values(splits) -> None:
    train, val = splits
    trunks = []
    whole = train_rungs(_model(), train, CONFIG, (1, 3, 5), val=val, on_trunk=trunks.append)
    assert [t.epochs for t in trunks] == [0, 2]  # saved after rungs 1 and 3, not after the top
    resumed = train_rungs(_model(), train, CONFIG, (1, 3, 5), val=val, resume=trunks[1])
    assert resumed.values == whole.values and resumed.epochs_trained == 2 + 1


@pytest.mark.slow  # seconds: three studies
def test_a_cut_short_trial_is_retried_once_from_its_last_rung(
    tmp_path: Path, splits, monkeypatch
) -> None:
    settings = {"max_train": 300, "epochs": (1, 2, 3), "heartbeat_s": 1, "reference": False}
    config = TuneConfig(n_trials=1, pruner="none", **settings)
    save = objective_module._save_trunk

    def save_then_stop(path, trunk, params):
        save(path, trunk, params)
        if sorted(trunk.values) == [1, 2]:
            raise KeyboardInterrupt  # killed after rung 2 was committed and its trunk saved

    monkeypatch.setattr(objective_module, "_save_trunk", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        hyperparam_tuning(tmp_path / "cut", config, splits=splits)
    monkeypatch.setattr(objective_module, "_save_trunk", save)
    assert (tmp_path / "cut" / "trunks" / "trial-0.pt").is_file()
    hyperparam_tuning(tmp_path / "cut", config, splits=splits)
    hyperparam_tuning(tmp_path / "whole", config, splits=splits)

    def trials(folder: str):
        storage = f"sqlite:///{tmp_path / folder / 'study.db'}"
        return optuna.load_study(study_name="fashionlab-plain", storage=storage).get_trials()

    cut, whole = trials("cut"), trials("whole")
    assert [t.state.name for t in cut] == ["FAIL", "COMPLETE"]
    assert cut[1].system_attrs["failed_trial"] == 0 and cut[1].user_attrs["resumed_rungs"] == [1, 2]
    assert cut[1].user_attrs["seed"] == whole[0].user_attrs["seed"]  # the retry keeps the seed
    assert cut[1].intermediate_values == whole[0].intermediate_values  # lost nothing
    # Only the trunk from epoch 1 (rung 2's fork) to 2 (rung 3's) and rung 3's decay were left.
    assert cut[1].user_attrs["epochs_trained"] == 2
    assert not list((tmp_path / "cut" / "trunks").iterdir())  # removed once the trial finished
