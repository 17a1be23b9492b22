"""One trial of the study: its sampled setting, its rungs, its value; the sampler and the pruner.

The search is asynchronous successive halving (ASHA, Li et al. 2020) over the rung lengths
``TuneConfig.epochs`` (the fidelity is the number of epochs; every rung trains on the whole
training part): a trial scores the WSD run of each rung length in turn (:mod:`.rungs`), reports
it (``trial.report(value, step=epochs)``, committed to the storage before the next rung
starts) and goes on only while its value is in the top ``1/eta`` of the values that every
trial of the study has reached at that rung (:class:`RungPruner`). With one sequential worker
ASHA promotes the first trial at every rung (alone there) and the early ones easily;
``TuneConfig.bootstrap`` (off by default, see there) stops the first trials at each rung below
the top instead.
The rule is Optuna's ``SuccessiveHalvingPruner``'s, written out here for two reasons: the
rungs are the configured lengths (any increasing list, not only ``r * eta**k``), and a rung's
competitors are read from the intermediate values, which survive a retried trial. TPE proposes
the settings (:func:`sampler`); a trial's value is its best rung value and the study's pick is
the best (trial, rung) pair, so the number of epochs is chosen on validation among the rung
lengths.

Resuming: after each rung the trial saves its stable trunk (``<tune>/trunks/trial-<n>.pt``,
atomically, keyed by the number of the trial first run with that setting). A trial killed
mid-way is failed and its setting retried once (``workers.fail_and_retry``); the retry finds the
trunk and goes on from the last finished rung (losing at most one rung), with the seed of the
trial it retries. The trunk is a file of the machine that ran the trial: a retry on another
host of a shared PostgreSQL study does not find it and starts from scratch (the same values,
recomputed).
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

from ....models import MLP
from ....runtime import seed_everything
from ..config import TuneConfig
from ..space import (
    MODEL_KEYS,
    FloatRange,
    search_space,
    setting_from_searched,
    settings_from_params,
)
from .rungs import Trunk, epochs_to_score, train_rungs

__all__ = ["suggest_params", "Objective", "sampler", "pruner", "RungPruner", "trial_key"]

logger = logging.getLogger(__name__)

DEAD_ACCURACY = 0.2  # below this validation accuracy after TuneConfig.dead_steps: a dead net


def suggest_params(trial: Any, config: TuneConfig) -> dict[str, Any]:
    """Sample one setting of ``config.space`` from an Optuna trial; returns the full flat
    setting without ``epochs`` (the rungs decide the length)."""
    sampled: dict[str, Any] = {}
    for key, allowed in search_space(config.space).items():  # the order the sampler draws in
        if isinstance(allowed, FloatRange):
            sampled[key] = trial.suggest_float(
                key, allowed.low, allowed.high, log=allowed.log, step=allowed.step
            )
        else:
            sampled[key] = trial.suggest_categorical(key, list(allowed))
    fixed = {"activation": "relu", "batchnorm": False, "dropout": 0.0}  # the plain space's
    params = {key: sampled.get(key, fixed.get(key)) for key in MODEL_KEYS}
    trained = setting_from_searched(sampled)  # lr from the effective rate and the momentum
    params |= {key: trained[key] for key in ("lr", "batch_size", "l2", "momentum")}
    params["nesterov"] = False
    params["schedule"] = "wsd"
    params["decay"] = config.decay
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
    """:class:`RungPruner` over ``config.epochs``, or Optuna's NopPruner for ``pruner="none"``."""
    import optuna

    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    return _rung_pruner_class()(config.epochs, config.eta, config.bootstrap)


@functools.cache
def _rung_pruner_class():
    import optuna
    from optuna.trial import TrialState

    class RungPruner(optuna.pruners.BasePruner):
        """ASHA's rule on the rung values: go on past rung ``r`` only while in the top 1/eta.

        The competitors at rung ``r`` are the values reported at step ``r`` by every trial of
        the study that is not FAIL (a failed trial's retry reports its values again); the
        trial goes on if its value is at least the ``max(1, n // eta)``-th best of the ``n``,
        and ``n > bootstrap`` (the first ``bootstrap`` trials at a rung only set the bar, as
        Optuna's ``bootstrap_count``). The top rung is never pruned.
        """

        def __init__(self, rungs, eta: int, bootstrap: int = 0) -> None:
            self.rungs, self.eta, self.bootstrap = tuple(rungs), eta, bootstrap

        def prune(self, study, trial) -> bool:
            step = trial.last_step
            if step is None or step not in self.rungs or step >= self.rungs[-1]:
                return False
            value = trial.intermediate_values[step]
            states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            values = [
                t.intermediate_values[step]
                for t in study.get_trials(deepcopy=False, states=states)
                if t.number != trial.number and step in t.intermediate_values
            ]
            values = sorted([*values, value], reverse=True)
            if len(values) <= self.bootstrap:
                return True
            return value < values[max(1, len(values) // self.eta) - 1]

    return RungPruner


def RungPruner(rungs, eta: int = 3, bootstrap: int = 0):  # noqa: N802 - made on first use
    """A :class:`RungPruner` (see ``_rung_pruner_class``) over ``rungs``."""
    return _rung_pruner_class()(rungs, eta, bootstrap)


def trial_key(trial) -> int:
    """The number of the trial first run with this setting (a retry keeps its seed and trunk)."""
    attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    return int(attrs.get("failed_trial", trial.number))


class Objective:
    """Score one sampled setting at every rung it reaches; the value is its best rung value."""

    def __init__(self, train, val, config: TuneConfig, trunk_dir: Path | None = None) -> None:
        self.train, self.val, self.config, self.trunk_dir = train, val, config, trunk_dir

    def _trunk_path(self, key: int) -> Path | None:
        return None if self.trunk_dir is None else Path(self.trunk_dir) / f"trial-{key}.pt"

    def __call__(self, trial) -> float:
        import optuna

        params = suggest_params(trial, self.config)
        key = trial_key(trial)
        rungs = list(self.config.epochs)
        model_config, train_config = settings_from_params(
            params, seed=self.config.seed + key, epochs=rungs[-1]
        )
        trial.set_user_attr("train_examples", len(self.train))
        trial.set_user_attr("val_examples", len(self.val))
        trial.set_user_attr("seed", train_config.seed)
        path = self._trunk_path(key)
        resume = _load_trunk(path, params)
        accs: list[float] = []
        losses: list[float] = []
        reached: list[int] = []
        per_epoch = -(-len(self.train) // train_config.batch_size)
        start = time.perf_counter()

        def on_rung(rung: int, val_acc: float, val_loss: float) -> None:
            reached.append(rung)
            accs.append(val_acc)
            losses.append(val_loss)
            self._record(trial, reached, accs, losses, diverged=False, seconds=None)
            trial.report(val_acc, rung)  # committed before the next rung starts
            if (
                self._dead(rung * per_epoch, val_acc, last=rung == rungs[-1])
                or trial.should_prune()
            ):
                seconds = time.perf_counter() - start
                trial.set_user_attr("epochs_trained", trained_until(rung))
                trial.set_user_attr("seconds", seconds)
                _log_trial(trial.number, "PRUNED", val_acc, seconds, params, rung)
                _remove(path)
                raise optuna.TrialPruned(f"val_acc {val_acc:.4f} at {rung} epochs")

        def trained_until(rung: int) -> int:
            if resume is None:
                return epochs_to_score(rungs, rung, train_config.decay)
            if rung in resume.values:  # pruned on a value the cut trial had committed
                return 0
            return epochs_to_score(rungs, rung, train_config.decay, resume.epochs, resume.values)

        def on_trunk(trunk: Trunk) -> None:
            if path is not None:
                _save_trunk(path, trunk, params)

        if resume is not None:
            _replay_committed(trial, key, resume, on_rung)
        seed_everything(train_config.seed)  # the initial weights, too, come from the trial's seed
        model = MLP(**model_config)
        result = train_rungs(
            model,
            self.train,
            train_config,
            rungs,
            val=self.val,
            device=self.config.device,
            on_rung=on_rung,
            on_trunk=on_trunk,
            resume=resume,
        )
        seconds = time.perf_counter() - start
        trial.set_user_attr("epochs_trained", result.epochs_trained)
        self._record(trial, reached, accs, losses, result.diverged, seconds=seconds)
        _remove(path)
        value = max(accs, default=0.0)
        best = reached[accs.index(value)] if accs else 0
        state = "DIVERGED" if result.diverged else "COMPLETE"
        _log_trial(trial.number, state, value, seconds, params, best)
        return value

    def _dead(self, steps: int, val_acc: float, *, last: bool) -> bool:
        """A net still at chance level after ``dead_steps`` SGD steps has died (every ReLU off,
        e.g. lr 0.3 with momentum): it does not recover, so it is pruned at once (never at the
        top rung, nor without a pruner)."""
        return (
            self.config.pruner != "none"
            and steps >= self.config.dead_steps
            and val_acc < DEAD_ACCURACY
            and not last
        )

    @staticmethod
    def _record(trial, reached, accs, losses, diverged: bool, seconds: float | None) -> None:
        finite = [x if math.isfinite(x) else None for x in losses]
        best = max(range(len(accs)), key=accs.__getitem__) if accs else None
        trial.set_user_attr("diverged", bool(diverged))
        trial.set_user_attr("rungs", list(reached))
        trial.set_user_attr("rung_val_acc", list(accs))
        trial.set_user_attr("rung_val_loss", finite)
        trial.set_user_attr("val_acc", accs[best] if best is not None else None)
        trial.set_user_attr("val_loss", finite[best] if best is not None else None)
        trial.set_user_attr("best_epochs", reached[best] if best is not None else None)
        trial.set_user_attr("epochs_run", reached[-1] if reached else 0)
        if seconds is not None:
            trial.set_user_attr("seconds", seconds)


def _replay_committed(trial, key: int, resume: Trunk, on_rung) -> None:
    """Give a resumed trial the rung values the cut trial ``key`` had committed, in order."""
    trial.set_user_attr("resumed_rungs", sorted(resume.values))
    logger.info(
        "trial %d resumes trial %d's trunk after its rungs %s",
        trial.number,
        key,
        sorted(resume.values),
    )
    for rung in sorted(resume.values):  # the values the cut trial had committed
        on_rung(rung, *resume.values[rung])


def _save_trunk(path: Path, trunk: Trunk, params: dict[str, Any]) -> None:
    import io

    import torch

    from ....atomic import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"params": params, "trunk": trunk.to_dict()}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def _load_trunk(path: Path | None, params: dict[str, Any]) -> Trunk | None:
    """The trunk saved at ``path`` for ``params``; None if absent, unreadable or of another
    setting (then the trial starts from scratch)."""
    import torch

    if path is None or not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["params"] != params:
            return None
        trunk = Trunk(**saved["trunk"])
        trunk.values = {int(k): (float(a), float(b)) for k, (a, b) in trunk.values.items()}
        return trunk
    except Exception as exc:  # a torn or foreign file: recompute rather than fail
        logger.warning("ignoring the trunk %s (%s); the trial starts from scratch", path, exc)
        return None


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _log_trial(
    number: int, state: str, value: float, seconds: float, params: dict[str, Any], epochs: int
) -> None:
    searched = {
        k: (f"{v:.3g}" if isinstance(v, float) else v)
        for k, v in params.items()
        if k not in ("nesterov", "schedule", "decay")
    }
    logger.info(
        "trial %3d  %-8s val_acc %.4f  at %3d epochs  %5.1f s  %s",
        number,
        state,
        value,
        epochs,
        seconds,
        " ".join(f"{k}={v}" for k, v in searched.items()),
    )
