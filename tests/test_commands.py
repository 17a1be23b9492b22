"""The subcommands' options: one home for every default (the config dataclasses)."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from fashionlab.cli import _common_options, build_parser
from fashionlab.commands import shown_default
from fashionlab.experiments.autoencoder.config import AutoencoderConfig
from fashionlab.experiments.classifier.config import TuneConfig
from fashionlab.experiments.classifier.recipe import PlainRecipe
from fashionlab.experiments.classifier.space import REFERENCE
from fashionlab.experiments.heinit.config import HeInitConfig
from fashionlab.experiments.landscape.config import LandscapeConfig

# subcommand -> its config dataclass, and the nested configs whose fields it also fills
CONFIGS: dict[str, tuple[type, tuple[str, ...]]] = {
    "heinit": (HeInitConfig, ()),
    "autoencoder": (AutoencoderConfig, ()),
    "landscape": (LandscapeConfig, ("train",)),
    "tune": (TuneConfig, ()),
    "train": (PlainRecipe, ()),
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _expected(config: type, nested: tuple[str, ...]) -> dict[str, str]:
    """Option dest -> its default as --help should show it, read from a default instance."""
    return _expected_of(config(), nested)


def _expected_of(instance: object, nested: tuple[str, ...]) -> dict[str, str]:
    expected = {}
    for owner in (instance, *(getattr(instance, name) for name in nested)):
        for field in dataclasses.fields(owner):
            none = field.metadata.get("none", "none")
            expected.setdefault(field.name, shown_default(getattr(owner, field.name), none))
    return expected


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_help_defaults_are_the_dataclass_defaults(command: str) -> None:
    expected = _expected(*CONFIGS[command])
    common = {
        action.dest for action in _common_options()._actions
    }  # --seed and friends: one for all
    checked = 0
    for action in _subparsers()[command]._actions:
        if action.dest not in expected or action.dest in common or action.help is None:
            continue
        # The dataclass decides: the option itself carries no default of its own.
        assert action.default is argparse.SUPPRESS, f"--{action.dest} has a default of its own"
        found = re.search(r"\(default: ([^;)]*)", action.help % vars(action))
        assert found, f"{command} --{action.dest}: its help does not show the default"
        assert found.group(1) == expected[action.dest], (command, action.dest)
        checked += 1
    assert checked >= 3


def test_train_s_plain_recipe_is_the_plain_reference_row() -> None:
    params = PlainRecipe().params()
    assert {key: params[key] for key in REFERENCE["plain"]} == REFERENCE["plain"]
    assert params["schedule"] == "wsd" and params["activation"] == "relu"
    args = build_parser().parse_args(["train", "--lr", "0.1", "--nesterov"])
    from fashionlab.commands import config_values

    recipe = PlainRecipe(**config_values(args, PlainRecipe))
    assert recipe == PlainRecipe(lr=0.1, nesterov=True)  # the rest: the recipe's


def test_tune_s_retrain_options_show_the_retrain_config_s_defaults() -> None:
    from fashionlab.experiments.classifier.config import ClassifierConfig

    expected = _expected(ClassifierConfig, ())
    quick = _expected_of(ClassifierConfig.quick(), ())
    actions = {action.dest: action for action in _subparsers()["tune"]._actions}
    for dest, field in (("retrain_epochs", "epochs"), ("retrain_max_train", "max_train")):
        action = actions[dest]
        assert action.default is argparse.SUPPRESS, f"--{dest} has a default of its own"
        text = action.help % vars(action)
        found = re.search(r"\(default: ([^;)]*)", text)
        assert found and found.group(1) == expected[field], (dest, text)
        if quick[field] != expected[field]:
            assert f"; {quick[field]} with --quick)" in text, (dest, text)
    assert expected["epochs"] == "the length chosen on validation"


@pytest.mark.parametrize("command", sorted(c for c in CONFIGS if hasattr(CONFIGS[c][0], "quick")))
def test_quick_defaults_in_help_are_the_quick_config(command: str) -> None:
    config, nested = CONFIGS[command]
    quick = _expected_of(config.quick(), nested)
    for action in _subparsers()[command]._actions:
        found = re.search(r"; (\S+) with --quick\)", (action.help or "") % vars(action))
        if found and action.dest in quick:
            assert found.group(1) == quick[action.dest], (command, action.dest)


def test_an_option_left_out_takes_the_dataclass_default(tmp_path) -> None:
    args = build_parser().parse_args(["autoencoder", "--epochs", "3"])
    from fashionlab.commands.autoencoder import _config

    config = _config(args)
    assert config.epochs == 3
    assert config.batch_size == AutoencoderConfig().batch_size
    assert config.lr == AutoencoderConfig().lr


def test_run_jobs_has_one_default_the_pipeline_s() -> None:
    from fashionlab.pipeline.workers import default_jobs

    assert build_parser().parse_args(["run"]).jobs is None  # left to run_stages
    action = next(a for a in _subparsers()["run"]._actions if a.dest == "jobs")
    assert f"(default: {default_jobs()} on this machine)" in action.help % vars(action)


def test_the_ablation_runs_for_the_plain_pick_s_full_retrain_only() -> None:
    from fashionlab.experiments.classifier.config import ClassifierConfig

    assert ClassifierConfig().ablation is False
    assert ClassifierConfig.retrain("plain").ablation is True
    assert ClassifierConfig.retrain("plain", quick=True).ablation is False
    assert ClassifierConfig.retrain("variant").ablation is False
    # [classifier] ablation = false in a config file
    assert ClassifierConfig.retrain("plain", ablation=False).ablation is False
    reference = ClassifierConfig.retrain("plain").for_reference()
    assert reference.label == "reference" and reference.ablation is False
