"""One trial of the study: its sampled setting, its training, its value; the sampler and pruner."""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from typing import Any

from ...models import MLP
from ...train import fit
from ...utils import seed_everything
from .config import TuneConfig
from .space import settings_from_params

__all__ = ["suggest_params", "Objective", "sampler", "pruner"]

logger = logging.getLogger(__name__)

DEAD_ACCURACY = 0.2  # below this validation accuracy after TuneConfig.dead_steps: a dead net


def suggest_params(trial: Any, config: TuneConfig) -> dict[str, Any]:
    """Sample one setting of ``config.space`` from an Optuna trial; returns the full flat
    setting."""
    params: dict[str, Any] = {}
    if config.space == "plain":
        params["hidden_layers"] = trial.suggest_categorical("hidden_layers", [3, 4, 5])
        params["units"] = trial.suggest_categorical("units", [30, 40, 50])
        params["activation"], params["batchnorm"], params["dropout"] = "relu", False, 0.0
    else:
        params["hidden_layers"] = trial.suggest_categorical("hidden_layers", [2, 3])
        params["units"] = trial.suggest_categorical("units", [128, 256])
        params["activation"] = trial.suggest_categorical(
            "activation", ["relu", "leaky_relu", "elu", "prelu"]
        )
        params["batchnorm"] = trial.suggest_categorical("batchnorm", [False, True])
        params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5, step=0.05)  # short model names
    params["lr"] = trial.suggest_float("lr", 1e-3, 0.5, log=True)
    params["batch_size"] = trial.suggest_categorical("batch_size", list(config.batch_choices))
    params["epochs"] = trial.suggest_categorical("epochs", list(config.epochs))
    params["l2"] = trial.suggest_float("l2", 1e-6, 1e-2, log=True)
    params["momentum"] = trial.suggest_categorical("momentum", [0.0, 0.9])
    params["nesterov"] = False
    params["schedule"] = config.schedule
    return params


def sampler(config: TuneConfig):
    """TPE reseeded per trial from ``(seed, trial number)``."""
    return _trial_seeded_tpe_class()(config.seed, n_startup_trials=min(8, config.n_trials))


@functools.cache
def _trial_seeded_tpe_class():
    """The sampler class, made on first use so that importing this module does not import Optuna."""
    import optuna

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        """A fresh ``TPESampler(seed=f(seed, trial.number))`` for every trial.

        One seeded TPESampler per *process* would make every process (or machine) sharing a
        study propose the same random start-up settings; seeding per *trial number* keeps one
        process reproducible and gives every trial of a shared study its own random draws.
        ``constant_liar`` treats trials still running elsewhere as bad, so workers spread out.
        """

        def __init__(self, seed: int, **tpe_options: Any) -> None:
            self.seed, self.tpe_options, self._current = seed, tpe_options, {}

        def _tpe(self, trial):
            if trial.number not in self._current:
                with (
                    warnings.catch_warnings()
                ):  # multivariate TPE and constant_liar are "experimental"
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._current[trial.number] = optuna.samplers.TPESampler(
                        seed=(self.seed * 1_000_003 + trial.number) % 2**32,
                        multivariate=True,
                        constant_liar=True,
                        **self.tpe_options,
                    )
            return self._current[trial.number]

        def infer_relative_search_space(self, study, trial):
            return self._tpe(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self._tpe(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            sampler = self._current.pop(trial.number, None)
            if sampler is not None:
                sampler.after_trial(study, trial, state, values)

    return TrialSeededTPE


def pruner(config: TuneConfig):
    import optuna

    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    if config.pruner == "halving":
        # Steps are percent of the schedule: rungs at 30 % and 90 %.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=30, reduction_factor=3)
    # Never prune before a third of the schedule; compare at equal fractions (see module docstring).
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=30)


class Objective:
    """Train one sampled setting on the subset; the value is the final validation accuracy."""

    def __init__(self, train, val, config: TuneConfig) -> None:
        self.train, self.val, self.config = train, val, config

    def __call__(self, trial) -> float:
        import optuna

        params = suggest_params(trial, self.config)
        model_config, train_config = settings_from_params(
            params, seed=self.config.seed + trial.number
        )
        trial.set_user_attr("train_examples", len(self.train))
        trial.set_user_attr("val_examples", len(self.val))
        trial.set_user_attr("seed", train_config.seed)
        accs: list[float] = []
        losses: list[float] = []

        def on_epoch(epoch: int, val_acc: float, val_loss: float) -> None:
            accs.append(val_acc)
            losses.append(val_loss)
            step = round(100 * epoch / train_config.epochs)
            trial.report(val_acc, step)
            # A net still at chance level after dead_steps SGD steps has died (every ReLU off, e.g.
            # lr 0.3 with momentum): it does not recover, so it is pruned at once, before the median
            # rule may.
            steps = epoch * -(-len(self.train) // train_config.batch_size)
            dead = (
                self.config.pruner != "none"
                and steps >= self.config.dead_steps
                and val_acc < DEAD_ACCURACY
            )
            if dead or trial.should_prune():
                self._record(trial, accs, losses, diverged=False, step=step, seconds=None)
                _log_trial(
                    trial.number, "PRUNED", val_acc, time.perf_counter() - start, params, step
                )
                raise optuna.TrialPruned(f"val_acc {val_acc:.4f} at {step}% of the schedule")

        start = time.perf_counter()
        seed_everything(train_config.seed)  # the initial weights, too, come from the trial's seed
        model = MLP(**model_config)
        result = fit(
            model,
            self.train,
            train_config,
            val=self.val,
            device=self.config.device,
            on_epoch=on_epoch,
        )
        self._record(
            trial,
            accs,
            losses,
            result.diverged,
            step=100 if not result.diverged else None,
            seconds=result.seconds,
        )
        value = 0.0 if result.diverged else float(result.history.val_acc[-1])
        _log_trial(
            trial.number,
            "DIVERGED" if result.diverged else "COMPLETE",
            value,
            result.seconds,
            params,
            100,
        )
        return value

    @staticmethod
    def _record(
        trial, accs, losses, diverged: bool, step: int | None, seconds: float | None
    ) -> None:
        finite = [x for x in losses if math.isfinite(x)]
        trial.set_user_attr("diverged", bool(diverged))
        trial.set_user_attr("val_acc_history", accs)
        trial.set_user_attr("val_loss_history", [x if math.isfinite(x) else None for x in losses])
        trial.set_user_attr("val_acc", accs[-1] if accs else None)
        trial.set_user_attr("val_loss", finite[-1] if finite and not diverged else None)
        trial.set_user_attr("epochs_run", len(accs))
        trial.set_user_attr("last_step", step)
        if seconds is not None:
            trial.set_user_attr("seconds", seconds)


def _log_trial(
    number: int, state: str, value: float, seconds: float, params: dict[str, Any], step: int
) -> None:
    searched = {
        k: (f"{v:.3g}" if isinstance(v, float) else v)
        for k, v in params.items()
        if k not in ("nesterov", "schedule")
    }
    logger.info(
        "trial %3d  %-8s val_acc %.4f  at %3d%%  %5.1f s  %s",
        number,
        state,
        value,
        step,
        seconds,
        " ".join(f"{k}={v}" for k, v in searched.items()),
    )
