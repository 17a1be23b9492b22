"""The ``sha`` scheduler: brackets of trials asked together, trained as populations, promoted
only when the whole bracket has its value at a rung; interrupts, resumes, workers, divergence."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from fashionlab.errors import ConfigError
from fashionlab.experiments.classifier import TuneConfig, hyperparam_tuning
from fashionlab.experiments.classifier.tuning import brackets as brackets_module
from fashionlab.experiments.classifier.tuning import workers as workers_module
from fashionlab.experiments.classifier.tuning.brackets import promoted
from fashionlab.experiments.classifier.tuning.workers import next_bracket

SHA = {
    "pruner": "sha",
    "bracket": 9,
    "max_train": 300,
    "epochs": (1, 2, 4),
    "heartbeat_s": 1,
    "reference": False,
}


@pytest.fixture(scope="module")
def splits(tiny_train_val):
    train, val = tiny_train_val
    return train.subset(600, seed=2), val.subset(300, seed=2)


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="fashionlab-plain", storage=f"sqlite:///{out / 'study.db'}")


def _summary(out: Path) -> list[tuple]:
    return [
        (t.number, t.state.name, t.params, dict(t.intermediate_values), t.value)
        for t in _study(out).get_trials()
    ]


def test_promoted_keeps_the_best_third_ties_to_the_lower_number() -> None:
    values = {0: 0.5, 1: 0.7, 2: 0.7, 3: 0.1, 4: 0.9, 5: 0.2}
    assert promoted(values, 3) == [1, 4]
    assert promoted({7: 0.0}, 3) == [7]  # at least one goes on
    assert promoted({0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}, 2) == [2, 3]


def _counts(finished: int = 0, running: int = 0, waiting: int = 0) -> dict[str, int]:
    return {"finished": finished, "running": running, "waiting": waiting}


def test_the_last_direct_trials_are_one_bracket_at_the_top_rung() -> None:
    config = TuneConfig(n_trials=60, rounds=1)  # brackets of 27, the last 6 direct
    assert (config.n_trials, config.bracket, config.direct) == (60, 27, 6)
    full, top = (6, 18, 54), (54,)
    assert next_bracket(config, _counts()) == (27, full)
    assert next_bracket(config, _counts(finished=27)) == (27, full)
    assert next_bracket(config, _counts(finished=27, running=27)) == (6, top)  # another worker
    assert next_bracket(config, _counts(finished=54)) == (6, top)
    assert next_bracket(config, _counts(finished=50)) == (4, full)  # halving trials come first
    assert next_bracket(config, _counts(finished=50, waiting=8)) == (8, full)  # retries first
    assert next_bracket(config, _counts(finished=57, waiting=2)) == (3, top)
    assert next_bracket(config, _counts(finished=60, waiting=2)) == (2, top)
    variant = TuneConfig(space="variant")  # one round: four brackets of 9, then 3 direct
    assert (variant.n_trials, variant.bracket, variant.direct, variant.rounds) == (39, 9, 3, 1)
    assert next_bracket(variant, _counts(finished=27)) == (9, (2, 6, 18))
    assert next_bracket(variant, _counts(finished=36)) == (3, (18,))
    assert TuneConfig(n_trials=30).direct == 3 and TuneConfig(n_trials=4).direct == 0
    assert TuneConfig(epochs=(2, 6)).direct == 0 and TuneConfig(pruner="asha").direct == 0
    assert TuneConfig(epochs=(2, 6)).rounds == 1 and TuneConfig(pruner="asha").rounds == 1
    assert next_bracket(TuneConfig(epochs=(2, 6), n_trials=5), _counts()) == (3, (2, 6))


def test_each_round_is_halving_brackets_then_its_direct_bracket() -> None:
    config = TuneConfig()  # the plain default: two rounds of 60, each 27 + 27 + 6 direct
    assert (config.n_trials, config.direct, config.rounds) == (120, 12, 2)
    assert config.round_sizes() == ((60, 6), (60, 6))
    full, top = (6, 18, 54), (54,)
    sizes = []
    finished = 0
    while finished < config.n_trials:
        size, rungs = next_bracket(config, _counts(finished=finished))
        sizes.append((size, rungs))
        finished += size
    assert sizes == [(27, full), (27, full), (6, top)] * 2
    # a study of one such round grown to two asks what a fresh one asks from there on
    assert next_bracket(config, _counts(finished=60)) == (27, full)
    assert next_bracket(config, _counts(finished=57, waiting=2)) == (3, top)  # round 1's end
    assert next_bracket(config, _counts(finished=120, waiting=2)) == (2, top)
    odd = TuneConfig(n_trials=25, direct=3, rounds=2, bracket=9)  # remainders to the first
    assert odd.round_sizes() == ((13, 2), (12, 1))
    assert next_bracket(odd, _counts(finished=9)) == (2, full)
    assert next_bracket(odd, _counts(finished=11)) == (2, top)
    assert next_bracket(odd, _counts(finished=13)) == (9, full)
    assert next_bracket(odd, _counts(finished=24)) == (1, top)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"pruner": "asha", "direct": 2}, "needs pruner = 'sha'"),
        ({"n_trials": 4, "direct": 5}, "more than the study's n_trials"),
        ({"direct": -1}, "direct"),
        ({"pruner": "asha", "rounds": 2}, "rounds = 2 needs pruner = 'sha'"),
        ({"n_trials": 3, "rounds": 4}, "rounds = 4 is more than the study's n_trials = 3"),
        ({"rounds": 0}, "rounds"),
    ],
)
def test_an_impossible_direct_bracket_is_refused(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TuneConfig(**settings)


@pytest.mark.slow  # seconds: a study of twelve trials
def test_direct_trials_train_straight_to_the_top_rung(tmp_path: Path, splits) -> None:
    result = hyperparam_tuning(tmp_path, TuneConfig(n_trials=12, direct=3, **SHA), splits=splits)
    trials = _study(tmp_path).get_trials()
    halving, direct = trials[:9], trials[9:]
    assert [len([t for t in halving if r in t.intermediate_values]) for r in (1, 2, 4)] == [9, 3, 1]
    assert [list(t.intermediate_values) for t in direct] == [[4], [4], [4]]
    assert all(t.state.name == "COMPLETE" for t in direct)
    assert result.counts["finished"] == 12 and result.best["config"]["direct"] == 3


@pytest.mark.slow  # seconds: three studies of six to twelve trials
def test_a_study_grown_by_a_round_equals_a_fresh_study_of_two_rounds(
    tmp_path: Path, splits
) -> None:
    two = {**SHA, "bracket": 5, "n_trials": 12, "direct": 2, "rounds": 2}
    hyperparam_tuning(tmp_path / "fresh", TuneConfig(**two), splits=splits)
    one = {**two, "n_trials": 6, "direct": 1, "rounds": 1}
    hyperparam_tuning(tmp_path / "grown", TuneConfig(**one), splits=splits)
    assert len(_summary(tmp_path / "grown")) == 6
    hyperparam_tuning(tmp_path / "grown", TuneConfig(**two), splits=splits)
    fresh = _summary(tmp_path / "fresh")
    assert _summary(tmp_path / "grown") == fresh
    assert [t[0] for t in fresh if list(t[3]) == [4]] == [5, 11]  # each round's direct trial


@pytest.mark.slow  # seconds: a study of nine trials
def test_a_bracket_promotes_the_top_third_only_once_every_trial_has_its_value(
    tmp_path: Path, splits, monkeypatch
) -> None:
    finish = workers_module._finish_trial
    seen_at_prune: list[tuple[int, int]] = []

    def checked_finish(study, trial, state, value):
        if state.name == "PRUNED":
            step = max(trial.study.get_trials()[trial.number].intermediate_values)
            reached = [t for t in study.get_trials() if step in t.intermediate_values]
            seen_at_prune.append((step, len(reached)))
        return finish(study, trial, state, value)

    monkeypatch.setattr(workers_module, "_finish_trial", checked_finish)
    result = hyperparam_tuning(tmp_path, TuneConfig(n_trials=9, **SHA), splits=splits)
    trials = _study(tmp_path).get_trials()
    at = {r: [t for t in trials if r in t.intermediate_values] for r in (1, 2, 4)}
    assert [len(at[r]) for r in (1, 2, 4)] == [9, 3, 1]
    # The promoted are the best of the whole bracket at each rung, whatever order they ran in.
    first = {t.number: t.intermediate_values[1] for t in at[1]}
    assert sorted(t.number for t in at[2]) == promoted(first, 3)
    second = {t.number: t.intermediate_values[2] for t in at[2]}
    assert [t.number for t in at[4]] == promoted(second, 3)
    assert [t.state.name for t in trials].count("COMPLETE") == 1
    assert result.counts == {
        "running": 0,
        "complete": 1,
        "pruned": 8,
        "fail": 0,
        "waiting": 0,
        "finished": 9,
    }
    # Every trial pruned at a rung was pruned when all 9 (or 3) had their value there.
    assert sorted(set(seen_at_prune)) == [(1, 9), (2, 3)]
    # The pick is the best (trial, rung) pair, as with the other schedulers.
    pairs = [(v, t.number, s) for t in trials for s, v in t.intermediate_values.items()]
    value, number, epochs = max(pairs, key=lambda p: (p[0], -p[1], -p[2]))
    assert (result.best["number"], result.best["value"], result.best["epochs"]) == (
        number,
        value,
        epochs,
    )
    assert not list((tmp_path / "trunks").glob("*.pt"))  # a finished bracket leaves no trunk


@pytest.mark.slow  # seconds: two studies
def test_same_seed_gives_the_same_bracket_study(tmp_path: Path, splits) -> None:
    config = TuneConfig(n_trials=12, **SHA)  # a bracket of 9 and one of 3 (TPE after the first)
    hyperparam_tuning(tmp_path / "a", config, splits=splits)
    hyperparam_tuning(tmp_path / "b", config, splits=splits)
    assert _summary(tmp_path / "a") == _summary(tmp_path / "b")
    assert len(_summary(tmp_path / "a")) == 12


@pytest.mark.slow  # seconds: three studies
def test_an_interrupted_bracket_resumes_from_its_trunks_and_ends_as_if_never_cut(
    tmp_path: Path, splits, monkeypatch
) -> None:
    whole = tmp_path / "whole"
    hyperparam_tuning(whole, TuneConfig(n_trials=9, **SHA), splits=splits)
    score = brackets_module.Bracket._score

    def cut_at_rung_two(self, group, rung):
        if rung == 2:
            raise KeyboardInterrupt
        return score(self, group, rung)

    cut = tmp_path / "cut"
    monkeypatch.setattr(brackets_module.Bracket, "_score", cut_at_rung_two)
    with pytest.raises(KeyboardInterrupt):
        hyperparam_tuning(cut, TuneConfig(n_trials=9, **SHA), splits=splits)
    states = [t.state.name for t in _study(cut).get_trials()]
    # The 6 pruned at rung 1 are kept; the 3 promoted are failed and queued again, their trunks
    # (after rung 1) on disk.
    assert sorted(states) == ["FAIL"] * 3 + ["PRUNED"] * 6 + ["WAITING"] * 3
    assert len(list((cut / "trunks").glob("trial-*.pt"))) == 3
    monkeypatch.setattr(brackets_module.Bracket, "_score", score)
    hyperparam_tuning(cut, TuneConfig(n_trials=9, **SHA), splits=splits)
    trials = _study(cut).get_trials()
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert len(retries) == 3
    assert all(t.user_attrs["resumed_rungs"] == [1] for t in retries)

    # Nothing was lost: each setting has the rung values and outcome of the uninterrupted run.
    def outcome(summary):
        return sorted(
            (sorted(params.items()), sorted(values.items()), state, value)
            for _, state, params, values, value in summary
            if state != "FAIL"
        )

    assert outcome(_summary(cut)) == outcome(_summary(whole))
    assert not list((cut / "trunks").glob("*.pt"))


@pytest.mark.slow  # seconds: a study of nine trials
def test_a_diverged_trial_leaves_its_bracket_and_the_others_go_on(tmp_path: Path, splits) -> None:
    study = optuna.create_study(
        study_name="fashionlab-plain",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        direction="maximize",
    )
    study.enqueue_trial({"effective_lr": 1e4, "batch_size": 32})  # the loss becomes NaN at once
    # Rungs of 2, 3, 4 epochs: the trunk trains before the first branch forks, and diverges.
    config = TuneConfig(n_trials=9, **{**SHA, "epochs": (2, 3, 4)})
    result = hyperparam_tuning(tmp_path, config, splits=splits)
    trials = _study(tmp_path).get_trials()
    assert trials[0].state.name == "COMPLETE" and trials[0].value == 0.0
    assert trials[0].user_attrs["diverged"] is True
    assert result.counts["finished"] == 9 and result.best["number"] != 0
    assert sum(len(t.intermediate_values) >= 2 for t in trials) == 3  # the bracket went on


@pytest.mark.slow  # seconds: two workers, one study
def test_two_local_workers_run_brackets_on_one_study(tmp_path: Path, splits) -> None:
    config = TuneConfig(n_trials=6, workers=2, **{**SHA, "bracket": 3})
    result = hyperparam_tuning(tmp_path, config, splits=splits)
    assert result.counts["finished"] >= 6
    assert result.counts["fail"] == 0 and result.counts["running"] == 0
    trials = _study(tmp_path).get_trials()
    numbers = [t.number for t in trials]
    assert numbers == sorted(set(numbers))  # every trial recorded once
    # Which worker asks first, and how many brackets each gets, is up to the processes: a worker
    # that starts late may find the study done. Each trial names one of at most two workers.
    assert 1 <= len({t.user_attrs["worker"] for t in trials}) <= 2


def test_the_report_names_the_rounds_and_their_direct_brackets() -> None:
    from fashionlab.experiments.classifier.config import split_evenly
    from fashionlab.report.classifier import _direct_text

    assert split_evenly(13, 2) == (7, 6) and split_evenly(12, 2) == (6, 6)
    base = {"epochs": [6, 18, 54], "n_trials": 120, "direct": 12}
    two = _direct_text({**base, "rounds": 2})
    assert "2 rounds of 60 trials, each ending with a bracket of 6 trained straight to 54" in two
    odd = _direct_text({**base, "n_trials": 25, "direct": 3, "rounds": 2})
    assert "2 rounds of 12-13 trials, each ending with a bracket of 1-2 trained" in odd
    assert "the last 12 trials are a bracket of their own" in _direct_text({**base, "rounds": 1})
    assert _direct_text({**base, "direct": 0, "rounds": 2}) == ""
