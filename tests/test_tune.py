"""hyperparam_tuning on tiny data: exports, resume, determinism, pruning, divergence, workers,
kill."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from fashionlab import data
from fashionlab.atomic import read_json
from fashionlab.errors import ConfigError
from fashionlab.experiments.classifier import (
    TuneConfig,
    hyperparam_tuning,
    settings_from_params,
    spearman,
)
from process_tools import finished as finished_in
from process_tools import freeze_when, running_owners, started
from tune_cases import TINY


@pytest.fixture(scope="module")
def splits(tiny_train_val):
    train, val = tiny_train_val
    return train.subset(600, seed=2), val.subset(300, seed=2)


def _storage(out: Path) -> str:
    return f"sqlite:///{out / 'study.db'}"


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="fashionlab-plain", storage=_storage(out)).get_trials()


@pytest.mark.slow  # seconds: a whole study
def test_exports_are_consistent_with_the_storage(tmp_path: Path, splits, monkeypatch) -> None:
    def no_test_set(*args, **kwargs):
        raise AssertionError("tuning read the test set")

    monkeypatch.setattr(data, "load_test", no_test_set)
    result = hyperparam_tuning(tmp_path, TuneConfig(n_trials=4, **TINY), splits=splits)
    trials = _trials(tmp_path)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4 == result.counts["finished"]
    best = read_json(tmp_path / "best.json")
    # The pick: the best (trial, rung) pair over every rung value of the finished trials.
    pairs = [(v, t.number, step) for t in finished for step, v in t.intermediate_values.items()]
    value, number, epochs = max(pairs, key=lambda p: (p[0], -p[1], -p[2]))
    top = trials[number]
    assert (best["number"], best["value"], best["epochs"]) == (number, value, epochs)
    assert best["params"]["epochs"] == epochs and best["searched"] == top.params
    assert best["params"]["schedule"] == "wsd" and best["seed"] == top.user_attrs["seed"]
    assert set(best["rank_correlation"]) == {"first_rung", "top_rung", "trials", "spearman"}
    assert best["params"]["activation"] == "relu" and best["params"]["hidden_layers"] in (3, 4, 5)
    model_config, train_config = settings_from_params(best["params"])
    lr = top.params["effective_lr"] * (1 - top.params["momentum"])  # the searched effective rate
    assert train_config.lr == pytest.approx(lr) and model_config["units"] == top.params["units"]
    assert "fixed_params" not in trials[0].system_attrs  # nothing is enqueued by default
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    for row, trial in zip(rows, trials, strict=True):
        assert row["state"] == trial.state.name
        if trial.state.name == "COMPLETE":
            assert float(row["value"]) == pytest.approx(trial.value)
            assert trial.value == max(trial.intermediate_values.values())
        assert float(row["val_acc_1"]) == pytest.approx(trial.intermediate_values[1])
        assert float(row["param_effective_lr"]) == pytest.approx(trial.params["effective_lr"])
        assert row["val_loss"] != "" and float(row["duration_s"]) > 0
    listed = read_json(tmp_path / "trials.json")["trials"]
    assert [t["number"] for t in listed] == [t.number for t in trials]
    assert all(t["user_attrs"]["train_examples"] == 300 for t in listed)


@pytest.mark.slow  # seconds: three studies
def test_resume_continues_the_study_and_same_seed_gives_same_trials(tmp_path: Path, splits) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    hyperparam_tuning(first, TuneConfig(n_trials=3, **TINY), splits=splits)
    before = [(t.number, t.params, t.value) for t in _trials(first)]
    hyperparam_tuning(first, TuneConfig(n_trials=5, **TINY), splits=splits)
    after = _trials(first)
    assert [(t.number, t.params, t.value) for t in after[:3]] == before  # finished trials are kept
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in after) == 5
    hyperparam_tuning(second, TuneConfig(n_trials=3, **TINY), splits=splits)
    assert [
        (t.number, t.params, t.value) for t in _trials(second)
    ] == before  # seeded: the same trials


@pytest.mark.slow  # seconds: a whole study
def test_pruning_stops_a_hopeless_trial(tmp_path: Path, splits) -> None:
    storage = _storage(tmp_path)
    study = optuna.create_study(
        study_name="fashionlab-plain", storage=storage, direction="maximize"
    )
    good = {
        "hidden_layers": 3,
        "units": 50,
        "effective_lr": 0.5,
        "batch_size": 32,
        "l2": 1e-5,
        "momentum": 0.9,
    }
    for _ in range(3):
        study.enqueue_trial(good)
    study.enqueue_trial(good | {"effective_lr": 0.001, "momentum": 0.0, "batch_size": 256})
    hyperparam_tuning(tmp_path, TuneConfig(n_trials=4, bootstrap=0, **TINY), splits=splits)
    trials = _trials(tmp_path)
    assert trials[0].state.name == "COMPLETE"  # alone at its rung: promoted (plain ASHA)
    pruned = trials[-1]  # 4 values at rung 1: only the best one of them goes on
    assert pruned.state.name == "PRUNED" and pruned.user_attrs["epochs_run"] == 1
    assert list(pruned.intermediate_values) == [1]
    # What it trained: rung 1 is a 1-epoch run, all of it decay (the trunk forks at epoch 0).
    assert pruned.user_attrs["epochs_trained"] == 1 and pruned.user_attrs["seconds"] > 0
    for trial in trials:  # ASHA's rule, checked against the values it saw
        if trial.state.name == "PRUNED":
            seen = [t.intermediate_values[1] for t in trials[: trial.number + 1]]
            assert trial.intermediate_values[1] < max(seen)


@pytest.mark.slow  # seconds: a whole study
def test_the_first_trials_at_a_rung_only_set_the_bar(tmp_path: Path, splits) -> None:
    hyperparam_tuning(tmp_path, TuneConfig(n_trials=6, bootstrap=2, **TINY), splits=splits)
    trials = _trials(tmp_path)
    # Trials 0 and 1 stop at rung 1 whatever their values; later ones follow ASHA's rule.
    assert [t.state.name for t in trials[:2]] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [1] for t in trials[:2])
    for trial in trials[2:]:
        seen = sorted((t.intermediate_values[1] for t in trials[: trial.number + 1]), reverse=True)
        promoted = trial.intermediate_values[1] >= seen[max(1, len(seen) // 3) - 1]
        assert (trial.state.name == "COMPLETE") == promoted, trial.number


@pytest.mark.slow  # seconds: a whole study
def test_a_net_stuck_at_chance_is_pruned_at_once(tmp_path: Path, splits) -> None:
    from fashionlab.experiments.classifier.tuning.objective import DEAD_ACCURACY

    storage = _storage(tmp_path)
    study = optuna.create_study(
        study_name="fashionlab-plain", storage=storage, direction="maximize"
    )
    # Plain SGD with lr 0.001 on 300 images: still at chance after its first epoch of two.
    study.enqueue_trial(
        {
            "hidden_layers": 5,
            "units": 30,
            "effective_lr": 0.001,
            "batch_size": 256,
            "l2": 1e-5,
            "momentum": 0.0,
        }
    )
    study.enqueue_trial(
        {
            "hidden_layers": 3,
            "units": 50,
            "effective_lr": 0.5,
            "batch_size": 32,
            "l2": 1e-5,
            "momentum": 0.9,
        }
    )
    # dead_steps=1: the real threshold (500 steps) needs more data
    hyperparam_tuning(tmp_path, TuneConfig(n_trials=2, dead_steps=1, **TINY), splits=splits)
    first = _trials(tmp_path)[0]
    assert (
        first.state.name == "PRUNED" and first.user_attrs["epochs_run"] == 1
    )  # no median rule yet: 1st trial
    assert first.value < DEAD_ACCURACY


@pytest.mark.slow  # seconds: a whole study
@pytest.mark.filterwarnings("ignore:Fixed parameter")
def test_a_diverged_trial_is_recorded_and_the_study_goes_on(tmp_path: Path, splits) -> None:
    study = optuna.create_study(
        study_name="fashionlab-plain", storage=_storage(tmp_path), direction="maximize"
    )
    study.enqueue_trial({"effective_lr": 1e4})  # far outside the space: NaN at once
    result = hyperparam_tuning(
        tmp_path, TuneConfig(n_trials=3, **(TINY | {"pruner": "none"})), splits=splits
    )
    trials = _trials(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert trials[0].value == 0.0 and trials[0].user_attrs["diverged"] is True
    assert result.best["number"] != 0


def test_impossible_settings_are_refused_before_any_trial(tmp_path: Path, splits) -> None:
    with pytest.raises(ConfigError, match="largest batch size"):
        TuneConfig(max_train=100)
    with pytest.raises(ConfigError, match="unknown search space"):
        TuneConfig(space="cnn")
    with pytest.raises(ConfigError, match="n_trials"):
        TuneConfig(n_trials=0)
    small = (splits[0].subset(200), splits[1])
    with pytest.raises(ConfigError, match="fewer than the largest batch size"):
        hyperparam_tuning(tmp_path, TuneConfig(max_train=None, epochs=(1,)), splits=small)
    with pytest.raises(ConfigError, match="storage URL"):
        hyperparam_tuning(tmp_path, TuneConfig(storage="nosuchdb:///x", **TINY), splits=splits)
    assert not (tmp_path / "trials.csv").exists()


@pytest.mark.slow  # seconds: two studies
def test_a_study_of_another_space_is_refused(tmp_path: Path, splits) -> None:
    storage = _storage(tmp_path)
    hyperparam_tuning(tmp_path, TuneConfig(n_trials=1, study_name="shared", **TINY), splits=splits)
    with pytest.raises(ConfigError, match="searches the 'plain' space"):
        hyperparam_tuning(
            tmp_path,
            TuneConfig(space="variant", n_trials=1, study_name="shared", storage=storage, **TINY),
            splits=splits,
        )


@pytest.mark.slow  # seconds: two studies
def test_resuming_with_other_trial_settings_is_refused(tmp_path: Path, splits) -> None:
    hyperparam_tuning(tmp_path, TuneConfig(n_trials=1, **TINY), splits=splits)
    with pytest.raises(ConfigError, match=r"epochs \[1, 2\] \(asked: \[2, 4\]\)"):
        hyperparam_tuning(
            tmp_path, TuneConfig(n_trials=2, **(TINY | {"epochs": (2, 4)})), splits=splits
        )


@pytest.mark.slow  # seconds: a whole study
def test_variant_space_trains_variants(tmp_path: Path, splits) -> None:
    result = hyperparam_tuning(
        tmp_path,
        TuneConfig(space="variant", n_trials=2, **(TINY | {"pruner": "none"})),
        splits=splits,
    )
    study = optuna.load_study(study_name="fashionlab-variant", storage=_storage(tmp_path))
    assert study.trials[0].params["units"] in (128, 256, 512)
    assert set(result.best["params"]) >= {
        "activation",
        "batchnorm",
        "dropout",
        "units",
        "lr",
        "epochs",
    }
    assert result.best["value"] > 0.3


@pytest.mark.slow
def test_two_local_workers_share_one_study(tmp_path: Path, splits) -> None:
    result = hyperparam_tuning(tmp_path, TuneConfig(n_trials=6, workers=2, **TINY), splits=splits)
    trials = _trials(tmp_path)
    numbers = [t.number for t in trials]
    assert numbers == sorted(set(numbers))
    assert 6 <= result.counts["finished"] <= 7  # two workers may both start the last trial
    assert result.counts["fail"] == 0 and result.counts["running"] == 0
    # The worker processes mark their trials as this run's: none is counted as another run's.
    assert {t.user_attrs["run"] for t in trials} == {result.best["runs"]["this"]}
    assert result.best["runs"]["by_others"] == 0


@pytest.mark.slow
def test_a_killed_tuning_process_loses_no_finished_trial(
    tmp_path: Path, real_data_dir: Path
) -> None:
    # Only the training files: tuning must work without the test set.
    folder = tmp_path / "train-only"
    folder.mkdir()
    for key in ("train-images", "train-labels"):
        name = data.FILES[key].name + ".gz"
        shutil.copy(real_data_dir / name, folder / name)
    command = [
        sys.executable,
        "-m",
        "fashionlab",
        "tune",
        "--out",
        str(tmp_path / "run"),
        "--data-dir",
        str(folder),
        "--max-train",
        "300",
        "--epochs",
        "2,3",
        "--pruner",
        "asha",  # one trial at a time (brackets: test_brackets.py)
        "--heartbeat",
        "1",
        "--no-retrain",
        "--no-progress",
        "--device",
        "cpu",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = tmp_path / "run" / "tune"
    db = out / "study.db"

    def two_done_and_every_running_trial_named() -> bool:
        return finished_in(db) >= 2 and None not in running_owners(db).values()

    with started(
        command + ["--trials", "40"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        # Stopped (SIGSTOP) at a checked state, then killed: what the test read is what the
        # resume finds, whatever the process was doing.
        freeze_when(process.pid, two_done_and_every_running_trial_named, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    kept = {t.number: t.value for t in _trials(out) if t.state.name == "COMPLETE"}
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in _trials(out))
    interrupted = [
        t for t in _trials(out) if t.state.name == "RUNNING"
    ]  # the trial the kill cut short
    resumed = subprocess.run(
        command + ["--trials", str(finished + 1)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials(out)
    assert {t.number: t.value for t in trials if t.number in kept} == kept
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == finished + 1
    assert "best trial" in resumed.stdout
    for zombie in interrupted:  # its process is gone: marked FAIL, and its setting retried once
        assert trials[zombie.number].state.name == "FAIL"
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == zombie.number]
        assert len(retried) == 1
        # The retry keeps what the cut trial had sampled (all of it, or only the parameters drawn
        # before the kill) and samples the rest afresh.
        assert zombie.params.items() <= retried[0].params.items()


@pytest.mark.slow  # seconds: waits out a heartbeat
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.timeout(180)  # before the fix this waited forever; then a real grace period
def test_a_trial_orphaned_before_its_first_heartbeat_is_failed_and_retried(
    tmp_path: Path, splits
) -> None:
    # A process killed between study.ask() and its heartbeat thread's first beat leaves a RUNNING
    # trial with no heartbeat, which Optuna never judges stale; a resumed study used to wait for it
    # forever.
    from fashionlab.experiments.classifier import open_storage

    config = TuneConfig(n_trials=3, **TINY)
    hyperparam_tuning(tmp_path, TuneConfig(n_trials=2, **TINY), splits=splits)
    study = optuna.load_study(
        study_name="fashionlab-plain", storage=open_storage(_storage(tmp_path), 1)
    )
    orphan = study.ask()  # RUNNING, and nobody will ever beat for it
    assert [t.state.name for t in _trials(tmp_path)][-1] == "RUNNING"
    # A clock that moves an hour at every reading: the grace period has passed at the second look.
    readings = iter(range(3600, 10**9, 3600))
    result = hyperparam_tuning(tmp_path, config, splits=splits, clock=lambda: float(next(readings)))
    trials = _trials(tmp_path)
    assert trials[orphan.number].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1 and retried[0].state.name in ("COMPLETE", "PRUNED")
    assert result.counts["finished"] == 3 and result.counts["running"] == 0


@pytest.mark.slow  # seconds: a whole study
def test_without_pruning_every_trial_reaches_the_top_and_the_ranks_are_compared(
    tmp_path: Path, splits
) -> None:
    result = hyperparam_tuning(
        tmp_path, TuneConfig(n_trials=4, **(TINY | {"pruner": "none"})), splits=splits
    )
    trials = _trials(tmp_path)
    assert result.counts["complete"] == 4 and result.counts["fail"] == 0
    assert all(list(t.intermediate_values) == [1, 2] for t in trials)
    firsts = [t.intermediate_values[1] for t in trials]
    tops = [t.intermediate_values[2] for t in trials]
    correlation = result.best["rank_correlation"]
    assert correlation["trials"] == 4 and correlation["first_rung"] == 1
    assert correlation["spearman"] == pytest.approx(spearman(firsts, tops))
    assert read_json(tmp_path / "trials.json")["rank_correlation"] == correlation


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)  # ties
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_enqueued_settings_run_first_and_bad_ones_are_refused(tmp_path: Path, splits) -> None:
    setting = {"hidden_layers": 4, "units": 40, "effective_lr": 0.02}
    by_lr = {"hidden_layers": 3, "units": 50, "lr": 0.03, "momentum": 0.9}  # a person's keys
    config = TuneConfig(n_trials=2, enqueue=[setting, by_lr], **TINY)
    hyperparam_tuning(tmp_path, config, splits=splits)
    first, second = _trials(tmp_path)[:2]
    assert setting.items() <= first.params.items()
    assert second.params["effective_lr"] == pytest.approx(0.3) and second.params["units"] == 50
    with pytest.raises(ConfigError, match="does not search"):
        TuneConfig(enqueue=[{"epochs": 3}])
    with pytest.raises(ConfigError, match="lr with its momentum"):
        TuneConfig(enqueue=[{"lr": 0.03}])  # the effective rate needs the momentum


@pytest.mark.slow  # seconds: a study and its reference row
def test_the_reference_row_uses_the_protocol(tmp_path: Path, splits) -> None:
    from fashionlab.experiments.classifier import REFERENCE

    result = hyperparam_tuning(
        tmp_path, TuneConfig(n_trials=1, **(TINY | {"reference": True})), splits=splits
    )
    reference = read_json(tmp_path / "reference.json")
    assert reference == result.reference
    assert REFERENCE["plain"].items() <= reference["params"].items()
    assert reference["rungs"] == [1, 2] and reference["epochs"] in (1, 2)
    assert reference["val_acc"] == max(reference["rung_val_acc"])
    assert reference["params"]["epochs"] == reference["epochs"]
    assert all(t.params != REFERENCE["plain"] for t in _trials(tmp_path))  # not in the study
    # best.json records the comparison with the person's recipe, whichever wins
    best = read_json(tmp_path / "best.json")
    assert best["reference"]["val_acc"] == reference["val_acc"]
    assert best["beats_reference"] == (best["val_acc"] >= reference["val_acc"])


def test_cli_refuses_impossible_settings_in_one_line(tmp_path: Path, capsys) -> None:
    from fashionlab.cli import main

    for extra, fragment in (
        (["--max-train", "100"], "largest batch size"),
        (["--workers", "0"], "workers"),
        (["--trials", "0"], "n_trials"),
        (["--storage", "mysql+nodriver://x/y"], "storage"),
    ):
        assert main(["tune", "--out", str(tmp_path), "--no-progress", "--no-retrain", *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and fragment in err and "\n" not in err, err


@pytest.mark.slow  # seconds: a study and two ablations
def test_the_ablation_reads_the_plain_arm_from_the_study(
    tmp_path: Path, synthetic_data_dir: Path
) -> None:
    from fashionlab.experiments.classifier.ablation import run_ablation

    config = TuneConfig.quick(n_trials=2, max_train=500, val_size=500)  # of 2,500 images
    best = hyperparam_tuning(tmp_path / "tune", config, data_dir=synthetic_data_dir).best
    params = best["params"]
    reused = run_ablation(tmp_path / "a", params, data_dir=synthetic_data_dir, study=best)
    assert reused["arms"]["plain"]["from_study"] and reused["seeds"] == [best["seed"]]
    # Trained again with the study's split, subset and seed, the plain arm is the study's run.
    trained = run_ablation(
        tmp_path / "b",
        params,
        seeds=(best["seed"],),
        val_size=config.val_size,
        split_seed=config.seed,
        max_train=config.max_train,
        data_dir=synthetic_data_dir,
    )
    assert trained["arms"]["plain"]["val_accuracy"] == best["val_acc"]
    assert trained["arms"]["batchnorm"] == reused["arms"]["batchnorm"]


@pytest.mark.slow  # seconds: two studies
def test_run_folders_sharing_a_study_count_and_name_the_trials_of_the_others(
    tmp_path: Path, splits
) -> None:
    from fashionlab.experiments.classifier import sqlite_url
    from fashionlab.report.classifier import classifier
    from fashionlab.report.markup import esc

    shared = sqlite_url(tmp_path / "shared.db")  # one study, as a PostgreSQL one is shared
    first, second = tmp_path / "a" / "tune", tmp_path / "b" / "tune"
    ran_first = hyperparam_tuning(
        first, TuneConfig(n_trials=2, storage=shared, **TINY), splits=splits
    )
    ran_second = hyperparam_tuning(
        second, TuneConfig(n_trials=5, storage=shared, **TINY), splits=splits
    )
    assert (ran_first.trials_run, ran_second.trials_run) == (2, 3)
    name_first, name_second = ran_first.best["runs"]["this"], ran_second.best["runs"]["this"]
    assert str(first.resolve()) in name_first and str(second.resolve()) in name_second
    for best in (read_json(second / "best.json"), read_json(second / "trials.json")):
        assert best["runs"]["trials"] == {name_first: 2, name_second: 3}
        assert (best["runs"]["by_others"], best["runs"]["not_recorded"]) == (2, 0)
    rows = list(csv.DictReader((second / "trials.csv").open()))
    assert [row["run"] for row in rows] == [name_first] * 2 + [name_second] * 3
    best = read_json(second / "best.json")
    assert best["written_by"] == (name_first if best["number"] < 2 else name_second)
    # Each report says what is its own: the second names the first run and its 2 trials.
    text = classifier(tmp_path / "b")
    assert "3 were written by this run, 2 by other runs sharing it" in text
    assert f"{esc(name_first)} (2)" in text
    assert read_json(first / "best.json")["runs"]["by_others"] == 0
    assert "other runs" not in classifier(tmp_path / "a")


def test_the_ablation_takes_the_study_s_split_whatever_the_length(
    tmp_path: Path, synthetic_data_dir: Path
) -> None:
    """A retrain whose length overrides the study's still ablates on the study's split, subset
    and seed; its plain arm is then trained (it is not the study's run), not read."""
    from fashionlab.experiments.classifier.ablation import run_ablation
    from fashionlab.experiments.classifier.space import REFERENCE
    from fashionlab.experiments.classifier.tuning.export import full_params

    config = TuneConfig.quick(max_train=300)
    params = full_params(REFERENCE["plain"], config) | {"batch_size": 100}
    study = {
        "config": config.to_dict() | {"seed": 3, "val_size": 500},
        "seed": 5,
        "epochs": 2,
        "params": params | {"epochs": 2},
        "val_acc": 0.5,
        "train_examples": 300,
        "val_examples": 500,
    }
    ablation = run_ablation(
        tmp_path / "a", params | {"epochs": 1}, data_dir=synthetic_data_dir, study=study
    )
    assert ablation["seeds"] == [5] and ablation["train_examples"] == 300
    assert ablation["val_examples"] == 500 and not ablation["arms"]["plain"]["from_study"]
    by_hand = run_ablation(
        tmp_path / "b",
        params | {"epochs": 1},
        seeds=(5,),
        val_size=500,
        split_seed=3,
        max_train=300,
        data_dir=synthetic_data_dir,
    )
    assert ablation["arms"] == by_hand["arms"]
    # the study's own length, but other threads: not the study's run either
    other = run_ablation(
        tmp_path / "c", study["params"], threads=2, data_dir=synthetic_data_dir, study=study
    )
    assert not other["arms"]["plain"]["from_study"]
    same = run_ablation(tmp_path / "d", study["params"], data_dir=synthetic_data_dir, study=study)
    assert same["arms"]["plain"]["from_study"] and same["arms"]["plain"]["val_accuracy"] == 0.5
